"""Shards: grouping records, the resume check, and writing one shard's files (done marker last)."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bowrt.atomic import fsync_replace, write_text_atomic
from bowrt.bundle import sha256_file
from bowrt.corpus.read import Record, Reject

# Fills ``out`` (shape [len(items), dim]) with the vectors of ``items``, in order, and calls
# ``progress(n)`` as each ``n`` more rows are filled (for the job's progress line). The third
# argument came in 0.3: an encoder written for ``encode(items, out)`` still runs, and its shard
# counts as done in one step when it returns (:func:`takes_progress`).
ShardEncoder = Callable[[Sequence[Any], np.ndarray, Callable[[int], None]], None]


def takes_progress(encode: Callable[..., None]) -> bool:
    """Whether a shard encoder accepts the ``progress`` argument (three positional parameters or
    ``*args``); one whose signature cannot be read is called the current way."""
    try:
        params = inspect.signature(encode).parameters.values()
    except (TypeError, ValueError):
        return True
    kinds = [p.kind for p in params]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Parameter.VAR_POSITIONAL in kinds or sum(k in positional for k in kinds) >= 3


@dataclass
class ShardInput:
    index: int
    ids: list[str]
    items: list[Any]
    first_line: int
    last_line: int
    input_sha256: str


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


def shard_files(index: int) -> dict[str, str]:
    return {
        "embeddings": f"embeddings-{index:05d}.npy",
        "ids": f"ids-{index:05d}.txt",
        "done": f"shard-{index:05d}.done.json",
    }


def shard_done(outdir: Path, shard: ShardInput) -> dict[str, Any] | None:
    """The shard's marker when it is complete for exactly this input, else None."""
    names = shard_files(shard.index)
    try:
        marker = json.loads((outdir / names["done"]).read_text(encoding="utf-8"))
        ok = marker["input_sha256"] == shard.input_sha256 and marker["count"] == len(shard.ids) and all(
            (outdir / names[k]).stat().st_size == marker["files"][k]["bytes"] for k in ("embeddings", "ids")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return marker if ok else None


def _encode_into(tmp: Path, shard: ShardInput, encode: ShardEncoder, dtype: str, dim: int,
                 progress: Callable[[int], None]) -> None:
    """The shard's vectors in a memory-mapped ``.npy`` at ``tmp``, removed on any error."""
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(shard.ids), dim))
    try:
        if takes_progress(encode):
            encode(shard.items, out, progress)
        else:  # an encoder of the 0.2 form, encode(items, out)
            encode(shard.items, out)
            progress(len(shard.items))
        out.flush()
    except BaseException:
        del out
        tmp.unlink(missing_ok=True)
        raise
    del out  # unmap before the rename


def write_shard(outdir: Path, shard: ShardInput, encode: ShardEncoder, dtype: str, dim: int,
                progress: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """Encode one shard into ``.tmp`` files, rename them, then write its done marker (last)."""
    names = shard_files(shard.index)
    (outdir / names["done"]).unlink(missing_ok=True)
    emb, ids = outdir / names["embeddings"], outdir / names["ids"]
    tmp = emb.with_name(emb.name + ".tmp")
    _encode_into(tmp, shard, encode, dtype, dim, progress)
    fsync_replace(tmp, emb)
    write_text_atomic(ids, "".join(i + "\n" for i in shard.ids))
    marker = {
        "index": shard.index, "count": len(shard.ids), "first_line": shard.first_line,
        "last_line": shard.last_line, "input_sha256": shard.input_sha256,
        "files": {
            "embeddings": {"name": emb.name, "sha256": sha256_file(emb), "bytes": emb.stat().st_size},
            "ids": {"name": ids.name, "sha256": sha256_file(ids), "bytes": ids.stat().st_size},
        },
    }
    write_text_atomic(outdir / names["done"], json.dumps(marker, indent=2) + "\n")
    return marker
