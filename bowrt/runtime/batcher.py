"""Dynamic batching for concurrent callers.

Many threads, asyncio tasks or HTTP handlers each want a few vectors. Running
each request alone wastes the hardware: one BERT pass over 32 rows costs little
more than over one. The batcher gathers requests for at most ``max_wait_ms``,
or until a row or token budget is full, runs them as one call of ``encode_fn``
on a single worker thread, and hands each caller exactly its own rows, in its
own order.

It knows nothing of ONNX (TEI keeps ``core/src/queue.rs`` apart from its
backends for the same reason): ``encode_fn`` is any function that maps a list
of items to an ``np.ndarray`` with one row per item, in order. One worker is
enough because ONNX Runtime releases the GIL while it computes; the callers'
threads do the cheap work before they enqueue: ``prepare_fn`` (for an Encoder:
validate and tokenize, once) turns a caller's items into what the queue holds, so
the queue holds token rows, as TEI's queue holds tokenized entries
(``core/src/infer.rs`` tokenizes, then ``queue.rs`` batches).

Choices this module makes, so callers can rely on them:

* **Queue bound unit.** ``max_queue`` counts *requests* accepted and not yet
  resolved (queued or inside a running batch), like TEI's
  ``max_concurrent_requests``. A full batcher fails fast with
  :class:`~bowrt.errors.Overloaded` (HTTP 429) instead of growing memory.
* **Split policy.** A request stays whole, in one batch, whenever it fits a
  batch alone. One that does not (more rows than ``max_batch_size``, or more
  padded tokens than ``max_batch_tokens``) is cut, in order, into greedy chunks
  that fit; the chunks run in successive batches and the caller gets its rows
  reassembled in order. A single item above the token budget runs alone.
* **Empty request.** ``[]`` returns at once, without calling ``encode_fn``,
  an array of shape ``(0, *row_shape)`` with the dtype of the latest batch
  output, or ``np.empty((0, 0), np.float32)`` before any batch has run.
* **Deadlines.** ``timeout`` bounds the wait until the request's first batch
  starts; a request still queued at its deadline (or cancelled) is dropped
  before it costs compute. Once started, the work is paid for and completes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Optional

import numpy as np

from bowrt.errors import BatcherClosed, BatchFailed, InputTypeError, OptionError, Overloaded, RequestTimeout
from bowrt.options import check_int, check_number
from bowrt.runtime.batch_types import _WINDOW, BatcherStats, Budget, BatchReport, EncodeFn, Pending, Percentiles, _Chunk, _Request

__all__ = ["BatchReport", "BatcherStats", "DynamicBatcher", "EncodeFn", "Pending", "Percentiles"]

# How long a batch is held open for more requests. 0: the worker runs whatever is
# queued as soon as it is free; requests still merge while a batch computes, and a
# lone request never waits. Measured with `python benchmarks/studies/batcher_wait.py`
# (bert-base twin, 2 threads, closed-loop single queries, x direct calls): 0 ms gave
# 1.01-1.08x at 1 client (5 ms: 0.61-0.86x), 1.21/1.08x at 4 (2 ms: 1.28/1.14x) and
# 1.30/1.33x at 16 (5 ms: 1.04/1.39x) for fp32/int8. On hardware where one batch of
# 16 costs far less than 16 batches of 1 (a GPU), a few ms may pay off.
DEFAULT_MAX_WAIT_MS = 0.0


class DynamicBatcher:
    """Gather concurrent requests into batches for one ``encode_fn``.

    ``encode_fn(items) -> np.ndarray`` (one row per item). ``prepare_fn(items) ->
    list`` runs in the caller's thread before enqueueing and returns what is queued,
    one entry per item (an Encoder's batcher validates and tokenizes there, once); a bad
    item fails only its own caller. ``cost_fn(prepared item) -> int`` gives its token
    count; with ``max_batch_tokens`` a batch's cost is ``max(cost) * rows``, padding
    included as in TEI, because the session pads every row to the longest.
    ``on_batch(BatchReport)`` is called in the worker after each batch (metrics).
    A batch closes when its rows reach ``max_batch_size``, the next request
    would break the token budget, or its oldest request has waited
    ``max_wait_ms``. Close it, or use it as a context manager: its worker is a
    daemon thread that otherwise lives as long as the process.
    """

    def __init__(
        self,
        encode_fn: EncodeFn,
        *,
        max_batch_size: int = 64,
        max_batch_tokens: Optional[int] = None,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_queue: int = 1024,
        cost_fn: Optional[Callable[[Any], int]] = None,
        prepare_fn: Optional[Callable[[list[Any]], list[Any]]] = None,
        on_batch: Optional[Callable[[BatchReport], None]] = None,
        name: str = "batcher",
    ) -> None:
        if not callable(encode_fn):
            raise OptionError("encode_fn must be callable: list of items -> np.ndarray, one row per item")
        for opt, fn in (("cost_fn", cost_fn), ("prepare_fn", prepare_fn), ("on_batch", on_batch)):
            if fn is not None and not callable(fn):
                raise OptionError(f"{opt} must be a callable or None, got {fn!r}")
        if max_batch_tokens is not None and cost_fn is None:
            raise OptionError("max_batch_tokens needs cost_fn (item -> token count) to measure items")
        self._encode_fn = encode_fn
        self._budget = Budget(check_int("max_batch_size", max_batch_size, 1),
                              check_int("max_batch_tokens", max_batch_tokens, 1, optional=True))
        self._max_wait_s = check_number("max_wait_ms", max_wait_ms, "milliseconds", optional=False) / 1000.0
        self._max_queue = check_int("max_queue", max_queue, 1)
        self._cost_fn, self._prepare_fn, self._on_batch = cost_fn, prepare_fn, on_batch
        self.name = str(name)
        # One lock, two wait sets: the worker waits for work, blocked submitters for room.
        lock = threading.RLock()
        self._work = threading.Condition(lock)
        self._room = threading.Condition(lock)
        self._queue: collections.deque[_Chunk] = collections.deque()
        self._pending = 0
        self._closed = False
        self._drain = True
        self._empty = np.empty((0, 0), np.float32)
        self._counts: collections.Counter[str] = collections.Counter()
        self._waits: collections.deque[float] = collections.deque(maxlen=_WINDOW)
        self._computes: collections.deque[float] = collections.deque(maxlen=_WINDOW)
        self._thread = threading.Thread(target=self._run, name=f"bowrt-{self.name}", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- callers
    def submit(
        self, items: list[Any], timeout: Optional[float] = None, block: bool = False,
        queue_timeout: Optional[float] = None,
    ) -> Pending:
        """Enqueue one request; its future resolves to an array of ``len(items)`` rows.

        Raises at once, in the caller: ``BatcherClosed``; ``InputTypeError`` for
        a non-list; whatever ``prepare_fn`` raises; ``Overloaded`` when
        ``max_queue`` requests are pending (with ``block=True``, after waiting
        up to ``queue_timeout`` seconds, forever if None, for room).
        """
        now = time.monotonic()
        timeout = check_number("timeout", timeout, "seconds", optional=True)
        queue_timeout = check_number("queue_timeout", queue_timeout, "seconds", optional=True)
        if self._closed:
            raise BatcherClosed(f"{self.name} is closed and accepts no new requests")
        if not isinstance(items, (list, tuple)):
            raise InputTypeError(f"items must be a list, got {type(items).__name__}; wrap one item as [item]")
        items = self._prepare(list(items))
        future = Pending()
        future.size = len(items)
        if not items:
            future.set_result(self._empty.copy())
            return future
        costs = [0] * len(items) if self._cost_fn is None else [self._cost(item) for item in items]
        future.cost = sum(costs)
        spans = self._budget.split(costs)
        req = _Request(items, future, None if timeout is None else now + timeout, len(spans))
        with self._room:
            if block:
                limit = None if queue_timeout is None else time.monotonic() + queue_timeout
                while not self._closed and self._pending >= self._max_queue:
                    left = None if limit is None else limit - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._room.wait(left)
            if self._closed:
                raise BatcherClosed(f"{self.name} is closed and accepts no new requests")
            if self._pending >= self._max_queue:
                self._counts["rejected"] += 1
                raise Overloaded(f"{self.name}: {self._pending} requests pending (max_queue={self._max_queue}); retry later")
            self._pending += 1
            self._counts["requests"] += 1
            self._counts["items"] += len(items)
            future.add_done_callback(self._release)
            req.enqueued = time.monotonic()
            self._queue.extend(_Chunk(req, i, a, b, c) for i, (a, b, c) in enumerate(spans))
            self._work.notify()
        return future

    def encode(self, items: list[Any], timeout: Optional[float] = None) -> np.ndarray:
        """Blocking form of :meth:`submit` (fails fast when full); ``timeout`` bounds the whole wait."""
        future = self.submit(items, timeout=timeout)
        try:
            return future.result(timeout)
        except RequestTimeout:
            raise
        except FutureTimeout:
            future.cancel()  # still queued: dropped unencoded; already running: result discarded
            raise RequestTimeout(f"{self.name}: no result within {timeout}s") from None

    async def aencode(self, items: list[Any], timeout: Optional[float] = None) -> np.ndarray:
        """Asyncio form: awaits the future without blocking the loop; cancelling the task cancels the request.

        ``prepare_fn`` runs in the loop's thread here; a server that must not spend that
        time there calls :meth:`submit` in a worker thread and awaits :meth:`result_async`.
        """
        return await self.result_async(self.submit(items, timeout=timeout), timeout)

    async def result_async(self, future: Future, timeout: Optional[float] = None) -> np.ndarray:
        """Await a submitted request's rows; ``RequestTimeout`` after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except RequestTimeout:
            raise
        except (asyncio.TimeoutError, FutureTimeout):
            raise RequestTimeout(f"{self.name}: no result within {timeout}s") from None

    def close(self, drain: bool = True, timeout: Optional[float] = None) -> bool:
        """Stop accepting; run (``drain=True``) or fail with ``BatcherClosed`` what is queued; stop the worker.

        Returns True once the worker has stopped (False if ``timeout`` ran out first).
        """
        timeout = check_number("timeout", timeout, "seconds", optional=True)
        with self._work:
            self._closed = True
            self._drain = self._drain and bool(drain)
            self._work.notify_all()
            self._room.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close(drain=True)

    def stats(self) -> BatcherStats:
        with self._work:
            c = self._counts
            return BatcherStats(
                requests=c["requests"], items=c["items"], batches=c["batches"],
                mean_batch_size=round(c["batch_items"] / c["batches"], 3) if c["batches"] else 0.0,
                failed_batches=c["failed_batches"], dropped=c["dropped"], rejected=c["rejected"],
                pending=self._pending, queue_wait_ms=Percentiles.of(self._waits),
                compute_ms=Percentiles.of(self._computes),
            )

    # ---------------------------------------------------------------- planning
    def _prepare(self, items: list[Any]) -> list[Any]:
        if self._prepare_fn is None:
            return items
        prepared = self._prepare_fn(items)
        if not isinstance(prepared, list) or len(prepared) != len(items):
            got = len(prepared) if isinstance(prepared, list) else type(prepared).__name__
            raise OptionError(f"prepare_fn must return a list with one entry per item ({len(items)}), got {got}")
        return prepared

    def _cost(self, item: Any) -> int:
        cost = self._cost_fn(item)  # type: ignore[misc]
        if isinstance(cost, bool) or not isinstance(cost, (int, np.integer)) or cost < 0:
            raise OptionError(f"cost_fn must return an int >= 0 (the item's token count), got {cost!r}")
        return int(cost)

    def _release(self, _future: Future) -> None:
        with self._room:
            self._pending -= 1
            self._room.notify()

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        while True:
            got = self._collect()
            if got is None:
                return
            batch, dead, abandoned = got
            self._drop(dead, RequestTimeout, "its deadline passed before it was computed")
            self._drop(abandoned, BatcherClosed, f"{self.name} was closed with drain=False")
            if batch:
                self._execute(batch)

    def _collect(self) -> Optional[tuple[list[_Chunk], list[_Chunk], list[_Chunk]]]:
        """Wait until a batch is due; return it with the chunks to drop, or None to stop.

        Chunks leave the queue in FIFO order into a batch being formed; the
        first that does not fit closes the batch, so no request is overtaken.
        """
        batch: list[_Chunk] = []
        dead: list[_Chunk] = []
        rows = peak = 0
        with self._work:
            while True:
                if self._closed and not self._drain and self._queue:
                    abandoned = list(self._queue)
                    self._queue.clear()
                    return batch, dead, abandoned
                now = time.monotonic()
                full = False
                while self._queue and not full:
                    chunk = self._queue[0]
                    req = chunk.req
                    if req.future.done() or (not req.started and req.deadline is not None and now >= req.deadline):
                        dead.append(self._queue.popleft())
                        continue
                    if batch and not self._budget.fits(rows, peak, chunk.rows, chunk.cost):
                        full = True
                        break
                    batch.append(self._queue.popleft())
                    rows, peak = rows + chunk.rows, max(peak, chunk.cost)
                    full = not self._budget.fits(rows, peak, 1, peak)  # nothing more can join
                if not batch:
                    if dead or self._closed:
                        return (batch, dead, []) if dead else None
                    self._work.wait()
                    continue
                due = batch[0].req.enqueued + self._max_wait_s
                if full or self._closed or now >= due:
                    return batch, dead, []
                self._work.wait(due - now)

    def _report(self, report: BatchReport) -> None:
        if self._on_batch is None:
            return
        try:
            self._on_batch(report)
        except Exception:  # a metrics hook must not stop the worker or fail the callers
            logging.getLogger("bowrt.batcher").exception("%s: on_batch raised", self.name)

    def _drop(self, chunks: list[_Chunk], error: type[Exception], why: str) -> None:
        for chunk in chunks:
            req = chunk.req
            if req.dropped or (req.started and req.future.done()):
                continue  # already dropped, or a sibling chunk failed it
            req.dropped = True
            try:
                req.future.set_exception(error(f"{self.name}: request of {len(req.items)} items dropped: {why}"))
            except InvalidStateError:
                pass  # the caller cancelled it
            with self._work:
                self._counts["dropped"] += 1

    def _execute(self, batch: list[_Chunk]) -> None:
        """Run one batch and resolve its callers; never raises, so the worker keeps serving."""
        live, waits = self._start(batch)
        if not live:
            return
        items = [item for chunk in live for item in chunk.req.items[chunk.start:chunk.stop]]
        t0 = time.perf_counter()
        cause: Optional[BaseException] = None
        try:
            out = self._encode_fn(items)
        except Exception as exc:
            out, cause = None, exc
        elapsed_s = time.perf_counter() - t0
        if cause is None and (not isinstance(out, np.ndarray) or out.ndim < 1 or out.shape[0] != len(items)):
            shape = getattr(out, "shape", type(out).__name__)
            problem = f"encode_fn returned {shape} for {len(items)} items; it must return one row per item"
        else:
            problem = None if cause is None else f"encode_fn raised {type(cause).__name__}: {cause}"
        with self._work:
            self._counts["batches"] += 1
            self._counts["batch_items"] += len(items)
            self._counts["failed_batches"] += problem is not None
            self._computes.append(elapsed_s * 1000.0)
            self._waits.extend(w * 1000.0 for w in waits)
        self._report(BatchReport(len(items), elapsed_s, tuple(waits), problem is not None))
        if problem is not None:
            for chunk in live:
                if not chunk.req.future.done():
                    error = BatchFailed(f"{self.name}: batch of {len(items)} items failed: {problem}")
                    error.__cause__ = cause
                    chunk.req.future.set_exception(error)
            return
        self._resolve(live, out, elapsed_s)

    def _start(self, batch: list[_Chunk]) -> tuple[list[_Chunk], list[float]]:
        """The chunks still wanted, marking their requests started; and the queue waits (s) of those new."""
        now = time.monotonic()
        live, late, waits = [], [], []
        for chunk in batch:
            req = chunk.req
            if not req.started:
                if req.dropped or (req.deadline is not None and now >= req.deadline):
                    late.append(chunk)
                    continue
                if not req.future.set_running_or_notify_cancel():
                    late.append(chunk)  # cancelled while the batch was forming
                    continue
                req.started = True
                req.future.queue_wait_s = now - req.enqueued
                waits.append(req.future.queue_wait_s)
            elif req.future.done():
                continue
            live.append(chunk)
        self._drop(late, RequestTimeout, "its deadline passed before it was computed")
        return live, waits

    def _resolve(self, live: list[_Chunk], out: np.ndarray, elapsed_s: float) -> None:
        """Hand each chunk its rows; a request whose last chunk this was gets its result."""
        self._empty = np.empty((0, *out.shape[1:]), out.dtype)
        offset = 0
        for chunk in live:
            part = out[offset:offset + chunk.rows]
            offset += chunk.rows
            req = chunk.req
            # Copy a shared batch so that no caller's array pins the others' rows.
            req.parts[chunk.index] = part if len(live) == 1 else part.copy()
            req.remaining -= 1
            req.future.compute_s += elapsed_s
            if req.remaining == 0:
                result = req.parts[0] if len(req.parts) == 1 else np.concatenate(req.parts, axis=0)
                req.parts = []
                req.future.set_result(result)
