"""The batcher's data: what a caller gets back (:class:`Pending`), what the stats and the
``on_batch`` hook report, and the queue's units (a request and its chunks)."""

from __future__ import annotations

import collections
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

_WINDOW = 2048  # recent samples kept for the latency percentiles


class EncodeFn(Protocol):
    """What the batcher runs: items in, one row per item out, same order."""

    def __call__(self, items: list[Any], /) -> np.ndarray: ...


@dataclass(frozen=True)
class Percentiles:
    """p50/p90/p99 in milliseconds over the recent window; 0.0 before any sample."""

    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, samples: collections.deque[float]) -> Percentiles:
        if not samples:
            return cls(0.0, 0.0, 0.0)
        p50, p90, p99 = np.percentile(np.asarray(samples, dtype=np.float64), [50, 90, 99])
        return cls(round(float(p50), 3), round(float(p90), 3), round(float(p99), 3))


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of the batcher's counters since it started.

    ``dropped`` counts requests never computed (timed out, cancelled, or left
    queued by ``close(drain=False)``); ``rejected`` counts ``Overloaded``;
    ``pending`` is the current number of unresolved requests (the queue bound's
    unit); ``queue_wait_ms`` is enqueue → batch start per request, and
    ``compute_ms`` is one ``encode_fn`` call per batch.
    """

    requests: int
    items: int
    batches: int
    mean_batch_size: float
    failed_batches: int
    dropped: int
    rejected: int
    pending: int
    queue_wait_ms: Percentiles
    compute_ms: Percentiles


@dataclass(frozen=True)
class BatchReport:
    """One batch, as ``on_batch`` hears of it (in the worker thread, after the batch ran):
    its rows, ``encode_fn``'s seconds, each newly started request's queue wait in seconds,
    and whether it failed."""

    rows: int
    compute_s: float
    queue_waits_s: tuple[float, ...]
    failed: bool


class Pending(Future):
    """The future :meth:`DynamicBatcher.submit` returns: it resolves to the request's rows,
    and carries the request's own figures, so that a caller learns them from its result,
    never from shared state: ``size`` items and ``cost`` (their summed cost: tokens, for an
    Encoder's batcher), then, once resolved, ``queue_wait_s`` (enqueue to its first batch)
    and ``compute_s`` (the ``encode_fn`` seconds of the batches it ran in)."""

    size: int = 0
    cost: int = 0
    queue_wait_s: float = 0.0
    compute_s: float = 0.0


class _Request:
    """One caller's list of items, its future, and the parts already computed."""

    __slots__ = ("items", "future", "deadline", "enqueued", "parts", "remaining", "started", "dropped")

    def __init__(self, items: list[Any], future: Pending, deadline: Optional[float], n_chunks: int):
        self.items, self.future, self.deadline = items, future, deadline
        self.enqueued = 0.0
        self.parts: list[Optional[np.ndarray]] = [None] * n_chunks
        self.remaining = n_chunks
        self.started = False  # touched by the worker thread only
        self.dropped = False


class _Chunk:
    """A slice ``items[start:stop]`` of a request, padded to ``cost`` tokens: the unit the queue holds."""

    __slots__ = ("req", "index", "start", "stop", "rows", "cost")

    def __init__(self, req: _Request, index: int, start: int, stop: int, cost: int):
        self.req, self.index, self.start, self.stop, self.cost = req, index, start, stop, cost
        self.rows = stop - start


class Budget:
    """A batch's limits: ``max_rows`` rows and ``max_tokens`` padded tokens (None: no
    token limit). A batch's cost is ``max(cost) * rows``, padding included as in TEI,
    because the session pads every row to the longest."""

    def __init__(self, max_rows: int, max_tokens: Optional[int]):
        self._max_rows, self._max_tokens = max_rows, max_tokens

    def fits(self, rows: int, peak: int, more_rows: int, cost: int) -> bool:
        """Whether ``more_rows`` rows of ``cost`` tokens join a batch of ``rows`` rows padded to ``peak``."""
        total = rows + more_rows
        if total > self._max_rows:
            return False
        return self._max_tokens is None or max(peak, cost) * total <= self._max_tokens

    def split(self, costs: list[int]) -> list[tuple[int, int, int]]:
        """Cut a request into in-order spans ``(start, stop, max cost)`` that each fit one batch."""
        spans, start, peak = [], 0, 0
        for i, cost in enumerate(costs):
            rows = i - start
            if rows and not self.fits(rows, peak, 1, cost):
                spans.append((start, i, peak))
                start, peak = i, 0
            peak = max(peak, cost)
        spans.append((start, len(costs), peak))
        return spans
