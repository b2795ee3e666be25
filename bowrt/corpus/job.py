"""The output folder of one corpus job: its settings file, resume and shard writes, the index."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bowrt.atomic import write_text_atomic
from bowrt.bundle import DATA_FILE, MODEL_FILE, Manifest
from bowrt.corpus.settings import CorpusSettings
from bowrt.corpus.shards import ShardEncoder, ShardInput, shard_done, shard_files, write_shard
from bowrt.errors import CorpusError

INDEX, JOB, REJECTS = "index.json", "job.json", "rejects.jsonl"


def _weights(m: Manifest) -> dict[str, str]:
    """What pins the vectors: the graph's sha256 and, where it keeps its weights in a data file
    (int8, bowrt >= 0.6), that file's, so that a resumed job never mixes two sets of weights."""
    out = {"model_sha256": m.files[MODEL_FILE]["sha256"]}
    if DATA_FILE in m.files:
        out["data_sha256"] = m.files[DATA_FILE]["sha256"]
    return out


def bundle_summary(bundle_dir: Path, m: Manifest) -> dict[str, Any]:
    return {
        "path": str(bundle_dir), "variant": m.variant, "source_model": m.source_model,
        "source_revision": m.source_revision, **_weights(m),
        "hidden_size": m.hidden_size, "pooling": m.pooling, "normalize": m.normalize,
        "similarity": m.similarity, "query_max_length": m.text.query_max_length,
        "passage_max_length": m.text.passage_max_length,
    }


class CorpusJob:
    """The output folder of one corpus job: settings, resume checks, atomic shard writes, the index.

    ``settings.fmt`` is the input's resolved format (not ``"auto"``).
    """

    def __init__(self, bundle_dir: Path, manifest: Manifest, input: Path, outdir: Path, settings: CorpusSettings):
        self.bundle_dir, self.manifest, self.input, self.outdir = bundle_dir, manifest, input, outdir
        self.settings = settings
        self.job_json = {
            "format": "bowrt-corpus-job", **_weights(manifest),
            "variant": manifest.variant, "kind": settings.kind, "input_format": settings.fmt,
            "shard_size": settings.shard_size, "dtype": settings.dtype,
        }
        outdir.mkdir(parents=True, exist_ok=True)
        job = outdir / JOB
        if job.is_file():
            diff = self._differences(job)
            if diff and not settings.overwrite:
                raise CorpusError(
                    f"{str(outdir)!r} holds a corpus job with other settings ({', '.join(diff)} differ); "
                    "use a new output folder, or overwrite=True (--overwrite) to replace it"
                )
            if diff:
                self._clear()
        (outdir / INDEX).unlink(missing_ok=True)  # present only once a job has completed
        write_text_atomic(job, json.dumps(self.job_json, indent=2) + "\n")

    def _differences(self, job: Path) -> list[str]:
        try:
            old = json.loads(job.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        return sorted(k for k in self.job_json if old.get(k) != self.job_json[k])

    def _clear(self) -> None:
        for pattern in ("embeddings-*.npy*", "ids-*.txt*", "shard-*.done.json*", REJECTS + "*", INDEX):
            for p in self.outdir.glob(pattern):
                p.unlink()

    def done(self, shard: ShardInput) -> dict[str, Any] | None:
        """The shard's marker when it is complete for exactly this input, else None."""
        return shard_done(self.outdir, shard)

    def write(self, shard: ShardInput, encode: ShardEncoder, progress: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
        """Encode one shard into ``.tmp`` files, rename them, then write its done marker (last)."""
        return write_shard(self.outdir, shard, encode, self.settings.dtype, self.manifest.hidden_size, progress)

    def finish(self, markers: list[dict[str, Any]], rejects: int) -> dict[str, Any]:
        # Shards beyond the last one belong to an earlier, longer input: remove them.
        for p in self.outdir.glob("shard-*.done.json"):
            index = int(p.name.split("-")[1].split(".")[0])
            if index >= len(markers):
                for name in shard_files(index).values():
                    (self.outdir / name).unlink(missing_ok=True)
        index = self._index(markers, rejects)
        write_text_atomic(self.outdir / INDEX, json.dumps(index, indent=2) + "\n")
        return index

    def _index(self, markers: list[dict[str, Any]], rejects: int) -> dict[str, Any]:
        from bowrt import __version__

        s = self.settings
        return {
            "format": "bowrt-corpus", "format_version": 1, "bowrt": __version__,
            "bundle": bundle_summary(self.bundle_dir, self.manifest),
            "kind": s.kind, "dim": self.manifest.hidden_size, "dtype": s.dtype,
            "input": {"path": str(self.input), "format": s.fmt},
            "shard_size": s.shard_size,
            "shards": [
                {"index": m["index"], "embeddings": m["files"]["embeddings"]["name"], "ids": m["files"]["ids"]["name"],
                 "count": m["count"], "first_line": m["first_line"], "last_line": m["last_line"],
                 "sha256": {k: m["files"][k]["sha256"] for k in ("embeddings", "ids")}}
                for m in markers
            ],
            "total": sum(m["count"] for m in markers), "rejects": rejects, "rejects_file": REJECTS,
        }
