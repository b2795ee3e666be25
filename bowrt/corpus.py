"""Encode a whole corpus into sharded ``.npy`` files: streaming, resumable, nothing dropped silently.

    encode_corpus("bundles/fp32", "psgs_w100.tsv", "wiki-vectors/")

Input, one record a line (``.gz`` files are read as such):

- **jsonl**: ``{"id": ..., "text": ..., "title": ...}`` (``title`` optional; BEIR's ``_id`` works too);
- **tsv**: ``id<TAB>text[<TAB>title]``, DPR's ``psgs_w100.tsv`` layout; a first line
  ``id<TAB>text<TAB>title`` is a header and skipped; fields may be quoted as DPR's are;
- **lines**: one text a line, its id the 1-based line number.

Output, in ``outdir``::

    embeddings-00000.npy   [n, dim] float32 (or float16), row i = ids-00000.txt line i
    ids-00000.txt          one id a line
    shard-00000.done.json  written last: the shard is complete (counts, line range, sha256)
    rejects.jsonl          {"line", "reason", "raw"} for every unusable line
    job.json               the settings; a rerun with other settings is refused
    index.json             written at the very end: bundle summary, dims, dtype, shards, totals

Memory stays bounded whatever the corpus size: the input is read one shard
(``shard_size`` records) at a time, encoded ``ENCODE_CHUNK`` texts per Encoder call
(which sorts them by length inside the call) straight into a memory-mapped
``.npy.tmp``, then renamed. A rerun skips every shard whose done marker matches
the same input lines (their sha256) and whose files are there at the recorded
sizes, so a crash costs at most the shard in progress.

Ids are not checked for uniqueness (that would need memory growing with the corpus).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bowrt.bundle import MODEL_FILE, Manifest, sha256_file
from bowrt.errors import CorpusError, CorpusLineError, OptionError

FORMATS = ("auto", "jsonl", "tsv", "lines")
DTYPES = ("float32", "float16")
ON_ERROR = ("skip", "stop")
KINDS = ("passage", "query")
DEFAULT_SHARD_SIZE = 50_000  # 150 MB of float32 768-d vectors a shard
ENCODE_CHUNK = 4096  # texts per Encoder call: bounds token-id memory, still long enough to sort by length
INDEX, JOB, REJECTS = "index.json", "job.json", "rejects.jsonl"
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".txt": "lines"}

# Fills ``out`` (shape [len(items), dim]) with the vectors of ``items``, in order.
ShardEncoder = Callable[[Sequence[Any], np.ndarray], None]


@dataclass(frozen=True)
class Record:
    line: int
    id: str
    item: Any  # a str, or {"title": ..., "text": ...}
    raw: bytes


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    raw: bytes


@dataclass
class ShardInput:
    index: int
    ids: list[str]
    items: list[Any]
    first_line: int
    last_line: int
    input_sha256: str


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


def _choice(name: str, value: Any, valid: Sequence[str]) -> str:
    if value not in valid:
        raise OptionError(f"{name} must be one of {', '.join(valid)}, got {value!r}")
    return value


# --- reading -------------------------------------------------------------------
def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def detect_format(path: Path) -> str:
    """By extension (``.jsonl``, ``.tsv``, ``.txt``, before any ``.gz``), else by the first non-blank line."""
    suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    if suffix.lower() in _SUFFIXES:
        return _SUFFIXES[suffix.lower()]
    with _open(path) as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip("\r\n")
            if line.strip():
                return "jsonl" if line.lstrip().startswith("{") else "tsv" if "\t" in line else "lines"
    return "lines"


def _check_id(value: Any) -> str | None:
    """The id as text, or None when it cannot be one line of ``ids-*.txt``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if text.strip() and "\n" not in text and "\r" not in text else None


def _parse_jsonl(line: str) -> tuple[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    key = "id" if "id" in obj else "_id" if "_id" in obj else None
    if key is None:
        raise ValueError("missing 'id'")
    rid = _check_id(obj[key])
    if rid is None:
        raise ValueError(f"'{key}' must be a non-empty str or int on one line, got {obj[key]!r:.60}")
    if "text" not in obj:
        raise ValueError("missing 'text'")
    text, title = obj["text"], obj.get("title")
    if not isinstance(text, str):
        raise ValueError(f"'text' must be a str, got {type(text).__name__}")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"'title' must be a str or null, got {type(title).__name__}")
    return rid, (text, title)


def _parse_tsv(line: str) -> tuple[str, Any]:
    fields = next(csv.reader([line], delimiter="\t", strict=False))
    if len(fields) not in (2, 3):
        raise ValueError(f"expected 2 or 3 tab-separated fields (id, text[, title]), got {len(fields)}")
    rid = _check_id(fields[0])
    if rid is None:
        raise ValueError("empty id")
    return rid, (fields[1], fields[2] if len(fields) == 3 else None)


def read_corpus(path: str | os.PathLike[str], fmt: str = "auto", kind: str = "passage") -> Iterator[Record | Reject]:
    """Every line of ``path`` as a :class:`Record` or a :class:`Reject` (1-based line numbers)."""
    path = Path(path)
    _choice("fmt", fmt, FORMATS)
    _choice("kind", kind, KINDS)
    if not path.is_file():
        raise CorpusError(f"input {str(path)!r} does not exist or is not a file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield Reject(number, f"not valid UTF-8 ({e.reason} at byte {e.start})", raw)
                continue
            if number == 1:
                line = line.lstrip("\ufeff")
                if fmt == "tsv" and line.split("\t")[0].strip().lower() == "id":
                    continue  # the header line of psgs_w100.tsv
            try:
                if fmt == "lines":
                    rid, (text, title) = str(number), (line, None)
                elif not line.strip():
                    raise ValueError("blank line")
                else:
                    rid, (text, title) = _parse_jsonl(line) if fmt == "jsonl" else _parse_tsv(line)
                if not text.strip():
                    raise ValueError("empty text")
            except ValueError as e:
                yield Reject(number, str(e), raw)
                continue
            # Queries take no title; a passage with a title becomes "{title} {text}" in the Encoder.
            item = text if kind == "query" or not title else {"title": title, "text": text}
            yield Record(number, rid, item, raw)


def plan_shards(rows: Iterator[Record | Reject], shard_size: int, on_reject: Callable[[Reject], None]) -> Iterator[ShardInput]:
    """Group records into shards of ``shard_size``; rejects go to ``on_reject`` and count in the shard's input hash."""
    index, ids, items, first, last = 0, [], [], 0, 0
    h = hashlib.sha256()
    for row in rows:
        h.update(row.raw)
        first, last = first or row.line, row.line
        if isinstance(row, Reject):
            on_reject(row)
            continue
        ids.append(row.id)
        items.append(row.item)
        if len(ids) == shard_size:
            yield ShardInput(index, ids, items, first, last, h.hexdigest())
            index, ids, items, first, h = index + 1, [], [], 0, hashlib.sha256()
    if ids:
        yield ShardInput(index, ids, items, first, last, h.hexdigest())


# --- writing -------------------------------------------------------------------
def shard_files(index: int) -> dict[str, str]:
    return {
        "embeddings": f"embeddings-{index:05d}.npy",
        "ids": f"ids-{index:05d}.txt",
        "done": f"shard-{index:05d}.done.json",
    }


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)


def bundle_summary(bundle_dir: Path, m: Manifest) -> dict[str, Any]:
    return {
        "path": str(bundle_dir), "variant": m.variant, "source_model": m.source_model,
        "source_revision": m.source_revision, "model_sha256": m.files[MODEL_FILE]["sha256"],
        "hidden_size": m.hidden_size, "pooling": m.pooling, "normalize": m.normalize,
        "similarity": m.similarity, "query_max_length": m.text.query_max_length,
        "passage_max_length": m.text.passage_max_length,
    }


class CorpusJob:
    """The output folder of one corpus job: settings, resume checks, atomic shard writes, the index."""

    def __init__(self, bundle_dir: Path, manifest: Manifest, input: Path, outdir: Path, *, kind: str, fmt: str,
                 shard_size: int, dtype: str, overwrite: bool = False):
        self.bundle_dir, self.manifest, self.input, self.outdir = bundle_dir, manifest, input, outdir
        self.kind, self.fmt, self.shard_size, self.dtype = kind, fmt, shard_size, dtype
        self.settings = {
            "format": "bowrt-corpus-job", "model_sha256": manifest.files[MODEL_FILE]["sha256"],
            "variant": manifest.variant, "kind": kind, "input_format": fmt, "shard_size": shard_size, "dtype": dtype,
        }
        outdir.mkdir(parents=True, exist_ok=True)
        job = outdir / JOB
        if job.is_file():
            try:
                old = json.loads(job.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                old = {}
            diff = sorted(k for k in self.settings if old.get(k) != self.settings[k])
            if diff and not overwrite:
                raise CorpusError(
                    f"{str(outdir)!r} holds a corpus job with other settings ({', '.join(diff)} differ); "
                    "use a new output folder, or overwrite=True (--overwrite) to replace it"
                )
            if diff:
                self._clear()
        (outdir / INDEX).unlink(missing_ok=True)  # present only once a job has completed
        _write_text_atomic(job, json.dumps(self.settings, indent=2) + "\n")

    def _clear(self) -> None:
        for pattern in ("embeddings-*.npy*", "ids-*.txt*", "shard-*.done.json*", REJECTS + "*", INDEX):
            for p in self.outdir.glob(pattern):
                p.unlink()

    def done(self, shard: ShardInput) -> dict[str, Any] | None:
        """The shard's marker when it is complete for exactly this input, else None."""
        names = shard_files(shard.index)
        try:
            marker = json.loads((self.outdir / names["done"]).read_text(encoding="utf-8"))
            ok = marker["input_sha256"] == shard.input_sha256 and marker["count"] == len(shard.ids) and all(
                (self.outdir / names[k]).stat().st_size == marker["files"][k]["bytes"] for k in ("embeddings", "ids")
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return marker if ok else None

    def write(self, shard: ShardInput, encode: ShardEncoder) -> dict[str, Any]:
        """Encode one shard into ``.tmp`` files, rename them, then write its done marker (last)."""
        names = shard_files(shard.index)
        (self.outdir / names["done"]).unlink(missing_ok=True)
        emb, ids = self.outdir / names["embeddings"], self.outdir / names["ids"]
        tmp = emb.with_name(emb.name + ".tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(len(shard.ids), self.manifest.hidden_size))
        try:
            encode(shard.items, out)
            out.flush()
        except BaseException:
            del out
            tmp.unlink(missing_ok=True)
            raise
        del out  # unmap before the rename
        _fsync(tmp)
        os.replace(tmp, emb)
        _write_text_atomic(ids, "".join(i + "\n" for i in shard.ids))
        marker = {
            "index": shard.index, "count": len(shard.ids), "first_line": shard.first_line,
            "last_line": shard.last_line, "input_sha256": shard.input_sha256,
            "files": {
                "embeddings": {"name": emb.name, "sha256": sha256_file(emb), "bytes": emb.stat().st_size},
                "ids": {"name": ids.name, "sha256": sha256_file(ids), "bytes": ids.stat().st_size},
            },
        }
        _write_text_atomic(self.outdir / names["done"], json.dumps(marker, indent=2) + "\n")
        return marker

    def finish(self, markers: list[dict[str, Any]], rejects: int) -> dict[str, Any]:
        # Shards beyond the last one belong to an earlier, longer input: remove them.
        for p in self.outdir.glob("shard-*.done.json"):
            index = int(p.name.split("-")[1].split(".")[0])
            if index >= len(markers):
                for name in shard_files(index).values():
                    (self.outdir / name).unlink(missing_ok=True)
        from bowrt import __version__

        index = {
            "format": "bowrt-corpus", "format_version": 1, "bowrt": __version__,
            "bundle": bundle_summary(self.bundle_dir, self.manifest),
            "kind": self.kind, "dim": self.manifest.hidden_size, "dtype": self.dtype,
            "input": {"path": str(self.input), "format": self.fmt},
            "shard_size": self.shard_size,
            "shards": [
                {"index": m["index"], "embeddings": m["files"]["embeddings"]["name"], "ids": m["files"]["ids"]["name"],
                 "count": m["count"], "first_line": m["first_line"], "last_line": m["last_line"],
                 "sha256": {k: m["files"][k]["sha256"] for k in ("embeddings", "ids")}}
                for m in markers
            ],
            "total": sum(m["count"] for m in markers), "rejects": rejects, "rejects_file": REJECTS,
        }
        _write_text_atomic(self.outdir / INDEX, json.dumps(index, indent=2) + "\n")
        return index


class _Progress:
    """tqdm when installed, else a line on stderr every 10 s."""

    def __init__(self, enabled: bool):
        self.enabled, self.encoded, self.reused, self.t0, self.last = enabled, 0, 0, time.perf_counter(), 0.0
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(unit=" texts", desc="bowrt encode", file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
            except ImportError:
                pass

    def add(self, encoded: int = 0, reused: int = 0) -> None:
        self.encoded, self.reused = self.encoded + encoded, self.reused + reused
        if self.bar is not None:
            self.bar.update(encoded)
            if reused:
                self.bar.set_postfix(reused=self.reused)
        elif self.enabled and time.perf_counter() - self.last >= 10.0:
            self.last = time.perf_counter()
            print(f"bowrt encode: {self.encoded} encoded ({self.rate:.0f}/s), {self.reused} reused", file=sys.stderr, flush=True)

    @property
    def rate(self) -> float:
        return self.encoded / max(time.perf_counter() - self.t0, 1e-9)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_corpus_job(bundle_dir: Path, manifest: Manifest, input: str | os.PathLike[str], outdir: str | os.PathLike[str],
                   encode: ShardEncoder, *, kind: str = "passage", fmt: str = "auto", shard_size: int = DEFAULT_SHARD_SIZE,
                   dtype: str = "float32", on_error: str = "skip", overwrite: bool = False,
                   progress: bool = True) -> CorpusResult:
    """The job around any shard encoder (this process, or Ray in :mod:`bowrt.scale.ray_encode`)."""
    _choice("kind", kind, KINDS)
    _choice("fmt", fmt, FORMATS)
    _choice("dtype", dtype, DTYPES)
    _choice("on_error", on_error, ON_ERROR)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise OptionError(f"shard_size must be an int >= 1, got {shard_size!r}")
    input, outdir = Path(input), Path(outdir)
    if not input.is_file():
        raise CorpusError(f"input {str(input)!r} does not exist or is not a file")
    fmt = detect_format(input) if fmt == "auto" else fmt
    job = CorpusJob(bundle_dir, manifest, input, outdir, kind=kind, fmt=fmt, shard_size=shard_size, dtype=dtype,
                    overwrite=overwrite)
    t0 = time.perf_counter()
    rejects_tmp = outdir / (REJECTS + ".tmp")
    n_rejects, markers, written, reused = 0, [], 0, 0
    bar = _Progress(progress)
    with open(rejects_tmp, "w", encoding="utf-8") as rejects_file:

        def on_reject(r: Reject) -> None:
            nonlocal n_rejects
            raw = r.raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if on_error == "stop":
                raise CorpusLineError(f"{input}:{r.line}: {r.reason} (on_error='stop'; use 'skip' to set it aside)", r.line)
            n_rejects += 1
            rejects_file.write(json.dumps({"line": r.line, "reason": r.reason, "raw": raw}, ensure_ascii=False) + "\n")

        try:
            for shard in plan_shards(read_corpus(input, fmt, kind), shard_size, on_reject):
                marker = job.done(shard)
                if marker is None:
                    marker = job.write(shard, encode)
                    written += 1
                    bar.add(encoded=len(shard.ids))
                else:
                    reused += 1
                    bar.add(reused=len(shard.ids))
                markers.append(marker)
        except BaseException:
            rejects_file.close()
            rejects_tmp.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
    os.replace(rejects_tmp, outdir / REJECTS)
    index = job.finish(markers, n_rejects)
    return CorpusResult(outdir, index["total"], n_rejects, len(markers), written, reused, bar.encoded,
                        time.perf_counter() - t0)


def local_shard_encoder(encoder: Any, kind: str, chunk: int = ENCODE_CHUNK) -> ShardEncoder:
    """Encode a shard in this process, ``chunk`` texts per Encoder call."""
    run = encoder.encode_queries if kind == "query" else encoder.encode_passages

    def encode(items: Sequence[Any], out: np.ndarray) -> None:
        for start in range(0, len(items), chunk):
            out[start:start + chunk] = run(list(items[start:start + chunk]))

    return encode


def encode_corpus(bundle: Any, input: str | os.PathLike[str], outdir: str | os.PathLike[str], *, kind: str = "passage",
                  fmt: str = "auto", shard_size: int = DEFAULT_SHARD_SIZE, dtype: str = "float32",
                  on_error: str = "skip", providers: str | Sequence[str] | None = None, threads: int | None = None,
                  overwrite: bool = False, progress: bool = True) -> CorpusResult:
    """Encode every record of ``input`` with ``bundle`` (a bundle folder or a loaded ``Encoder``) into ``outdir``.

    ``kind``: ``"passage"`` (title + text, passage max length) or ``"query"``.
    ``on_error``: ``"skip"`` writes unusable lines to ``rejects.jsonl``; ``"stop"``
    raises :class:`CorpusLineError` at the first one. Completed shards of an
    interrupted run are reused; a folder holding a job with other settings is
    refused unless ``overwrite``.
    """
    from bowrt.runtime import Encoder

    _choice("kind", kind, KINDS)  # before loading anything
    if isinstance(bundle, Encoder):
        if providers is not None or threads is not None:
            raise OptionError("providers and threads apply when bundle is a path; this Encoder is already built")
        enc = bundle
    else:
        enc = Encoder(bundle, providers, threads)
    bundle_dir = Path(enc.bundle_dir)
    return run_corpus_job(bundle_dir, enc.manifest, input, outdir, local_shard_encoder(enc, kind), kind=kind, fmt=fmt,
                          shard_size=shard_size, dtype=dtype, on_error=on_error, overwrite=overwrite, progress=progress)


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


__all__ = [
    "CorpusJob", "CorpusResult", "Record", "Reject", "ShardInput", "detect_format", "encode_corpus",
    "load_corpus", "local_shard_encoder", "plan_shards", "read_corpus", "run_corpus_job",
]
