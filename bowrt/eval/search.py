"""Exact top-k search by dot product, over passage vectors that never need to fit in memory at once.

The passages come as blocks (``bowrt encode``'s shards, memory-mapped); each block is
scored against a slice of the queries at a time and merged into a running top-k, so
memory is bounded by ``max_scores`` floats of scores plus the top-k itself: 1M x 768
float32 passages alone would be 3 GB. Ties in score are broken by the lower row, so two
runs on the same vectors give the same ranking. FAISS (``faiss-cpu``), when installed, is
the other backend: an exact inner-product index (``IndexFlatIP``) on the same vectors,
which returns the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from bowrt.errors import OptionError

BACKENDS = ("numpy", "faiss")
MAX_SCORES = 1 << 24  # floats of scores held at once (64 MB)


def _merge(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of two candidate sets per row: highest score first, lower row first on a tie."""
    cs, ci = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1)
    order = np.lexsort((ci, -cs), axis=1)[:, :k]
    return np.take_along_axis(cs, order, 1), np.take_along_axis(ci, order, 1)


def _block_top(q: np.ndarray, block: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ block.T
    kk = min(k, scores.shape[1])
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < scores.shape[1] else np.tile(
        np.arange(scores.shape[1]), (len(q), 1))
    return np.take_along_axis(scores, part, 1), part + offset


def top_k_numpy(queries: np.ndarray, blocks: Iterable[np.ndarray], k: int,
                on_block: Callable[[int], None] | None = None, max_scores: int = MAX_SCORES) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each ``[n_queries, k]`` (fewer columns if there are fewer passages), best first.
    At most ``max_scores`` scores exist at once: queries in slices of up to 4096, passages in chunks
    sized to fit."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    q_rows = max(1, min(len(q), 4096))
    p_rows = max(1, max_scores // q_rows)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    offset = 0
    for block in blocks:
        for start in range(0, len(block), p_rows):
            chunk = np.asarray(block[start:start + p_rows], dtype=np.float32)
            tops = [_block_top(q[qs:qs + q_rows], chunk, offset + start, k) for qs in range(0, len(q), q_rows)]
            if tops:
                best_s, best_i = _merge(best_s, best_i, np.concatenate([t[0] for t in tops]),
                                        np.concatenate([t[1] for t in tops]), k)
        offset += len(block)
        if on_block is not None:
            on_block(len(block))
    return best_s, best_i


def top_k_faiss(queries: np.ndarray, blocks: Iterable[np.ndarray], k: int,
                on_block: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same search through a FAISS ``IndexFlatIP`` (exact); ties ordered as :func:`top_k_numpy` orders them."""
    try:
        import faiss
    except ImportError as e:
        raise OptionError("the faiss backend needs faiss-cpu: pip install faiss-cpu (or use --backend numpy)") from e
    index = None
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if index is None:
            index = faiss.IndexFlatIP(block.shape[1])
        index.add(block)
        if on_block is not None:
            on_block(len(block))
    if index is None:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    s, i = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, index.ntotal))
    empty_s, empty_i = np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    return _merge(empty_s, empty_i, s, i.astype(np.int64), k)


def top_k(queries: np.ndarray, blocks: Iterable[np.ndarray], k: int, backend: str = "numpy",
          on_block: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    if backend not in BACKENDS:
        raise OptionError(f"unknown search backend {backend!r}; valid: {', '.join(BACKENDS)}")
    run = top_k_numpy if backend == "numpy" else top_k_faiss
    return run(queries, blocks, k, on_block)
