"""Running a corpus job: the loop over shards, rejects, progress, and the in-process encoder."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bowrt.bundle import Manifest
from bowrt.corpus.job import INDEX, REJECTS, CorpusJob
from bowrt.corpus.progress import Progress, count_lines
from bowrt.corpus.read import Reject, check_input, detect_format, read_corpus
from bowrt.corpus.settings import ENCODE_CHUNK, CorpusSettings, corpus_settings
from bowrt.corpus.shards import ShardEncoder, plan_shards
from bowrt.errors import CorpusError, CorpusLineError, OptionError


@dataclass(frozen=True)
class CorpusResult:
    outdir: Path
    total: int  # vectors in the output
    rejects: int
    shards: int
    shards_written: int
    shards_reused: int
    encoded: int  # vectors computed by this run
    seconds: float


class _Rejects:
    """``rejects.jsonl``, written as ``.tmp`` and renamed in once the job is through; with
    ``stop`` the first unusable line raises :class:`CorpusLineError` instead."""

    def __init__(self, outdir: Path, input: Path, stop: bool):
        self.path, self.tmp, self.input, self.stop, self.count = outdir / REJECTS, outdir / (REJECTS + ".tmp"), input, stop, 0
        self.file = open(self.tmp, "w", encoding="utf-8")

    def __call__(self, r: Reject) -> None:
        raw = r.raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if self.stop:
            raise CorpusLineError(f"{self.input}:{r.line}: {r.reason} (on_error='stop'; use 'skip' to set it aside)", r.line)
        self.count += 1
        self.file.write(json.dumps({"line": r.line, "reason": r.reason, "raw": raw}, ensure_ascii=False) + "\n")

    def commit(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def run_corpus_job(bundle_dir: Path, manifest: Manifest, input: str | os.PathLike[str], outdir: str | os.PathLike[str],
                   encode: ShardEncoder, settings: CorpusSettings | None = None) -> CorpusResult:
    """The job around any shard encoder (this process, or Ray in :mod:`bowrt.scale.ray_encode`)."""
    settings = corpus_settings(settings)
    input, outdir = check_input(input), Path(outdir)
    if settings.fmt == "auto":
        settings = dataclasses.replace(settings, fmt=detect_format(input))
    job = CorpusJob(bundle_dir, manifest, input, outdir, settings)
    t0 = time.perf_counter()
    markers, written = [], 0
    bar = Progress(settings.progress, count_lines(input) if settings.progress else None)
    rejects = _Rejects(outdir, input, stop=settings.on_error == "stop")
    try:
        for shard in plan_shards(read_corpus(input, settings.fmt, settings.kind), settings.shard_size, rejects):
            marker = job.done(shard)
            if marker is None:
                marker = job.write(shard, encode, bar.texts)
                written += 1
                bar.lines_done(shard.last_line)
            else:
                bar.lines_done(shard.last_line, reused=len(shard.ids))
            markers.append(marker)
    except BaseException:
        rejects.discard()
        bar.close()
        raise
    bar.close(finished=True)
    rejects.commit()
    index = job.finish(markers, rejects.count)
    return CorpusResult(outdir, index["total"], rejects.count, len(markers), written, len(markers) - written,
                        bar.encoded, time.perf_counter() - t0)


def local_shard_encoder(encoder: Any, kind: str, chunk: int = ENCODE_CHUNK) -> ShardEncoder:
    """Encode a shard in this process, ``chunk`` texts per Encoder call (each reported to ``progress``)."""
    run = encoder.encode_queries if kind == "query" else encoder.encode_passages

    def encode(items: Sequence[Any], out: np.ndarray, progress: Callable[[int], None]) -> None:
        for start in range(0, len(items), chunk):
            part = list(items[start:start + chunk])
            out[start:start + len(part)] = run(part)
            progress(len(part))

    return encode


def encode_corpus(bundle: Any, input: str | os.PathLike[str], outdir: str | os.PathLike[str],
                  settings: CorpusSettings | None = None, *, providers: str | Sequence[str] | None = None,
                  threads: int | None = None, **options: Any) -> CorpusResult:
    """Encode every record of ``input`` with ``bundle`` (a bundle folder or a loaded ``Encoder``) into ``outdir``.

    ``settings``: a :class:`CorpusSettings`; ``options`` (``kind``, ``fmt``,
    ``shard_size``, ``dtype``, ``on_error``, ``overwrite``, ``progress``) set or
    replace its fields, e.g. ``encode_corpus(b, "c.tsv", "out/", kind="query")``.
    ``on_error``: ``"skip"`` writes unusable lines to ``rejects.jsonl``; ``"stop"``
    raises :class:`CorpusLineError` at the first one. Completed shards of an
    interrupted run are reused; a folder holding a job with other settings is
    refused unless ``overwrite``.
    """
    from bowrt.runtime import Encoder

    settings = corpus_settings(settings, **options)  # before loading anything
    if isinstance(bundle, Encoder):
        if providers is not None or threads is not None:
            raise OptionError("providers and threads apply when bundle is a path; this Encoder is already built")
        enc = bundle
    else:
        enc = Encoder(bundle, providers, threads)
    bundle_dir = Path(enc.bundle_dir)
    return run_corpus_job(bundle_dir, enc.manifest, input, outdir, local_shard_encoder(enc, settings.kind), settings)


def load_corpus(outdir: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Read a finished job back: all ids and one ``[total, dim]`` array (small corpora and tests)."""
    outdir = Path(outdir)
    if not (outdir / INDEX).is_file():
        raise CorpusError(f"{str(outdir)!r} has no {INDEX}: the job did not complete")
    index = json.loads((outdir / INDEX).read_text(encoding="utf-8"))
    ids: list[str] = []
    arrays = []
    for s in index["shards"]:
        ids += (outdir / s["ids"]).read_text(encoding="utf-8").splitlines()
        arrays.append(np.load(outdir / s["embeddings"]))
    vecs = np.concatenate(arrays) if arrays else np.zeros((0, index["dim"]), dtype=index["dtype"])
    return ids, vecs
