"""Dynamic batcher: exactness under concurrency, fault isolation, back-pressure, close.

The encode function is a fake: each string maps to a fixed float32 row derived
from its sha256, so "the batched result equals the direct call" is an exact
comparison, and every call is recorded so lost or duplicated rows show up.
Items are unique per test, so a Counter over what the fake saw is a ledger.
A "HOLD" item parks the worker inside encode_fn until the test releases it:
that is how tests fill the queue deterministically instead of racing sleeps.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

from bowrt.errors import (
    BatcherClosed,
    BatchFailed,
    BowrtError,
    InputError,
    InputTypeError,
    OptionError,
    Overloaded,
    RequestTimeout,
)
from bowrt.runtime.batcher import BatcherStats, DynamicBatcher

pytestmark = pytest.mark.timeout(60)

DIM = 8
WAIT = 10.0  # upper bound for any single wait in these tests


def row_of(item: str) -> np.ndarray:
    digest = hashlib.sha256(item.encode()).digest()
    return np.frombuffer(digest, dtype=np.uint8)[:DIM].astype(np.float32) / 255.0


def direct(items: list[str]) -> np.ndarray:
    return np.stack([row_of(item) for item in items])


class FakeEncoder:
    """Deterministic encode_fn that records every batch; "HOLD" parks it, "boom" fails it."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.lock = threading.Lock()
        self.batches: list[list[str]] = []
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[str]) -> np.ndarray:
        with self.lock:
            self.batches.append(list(items))
        if "HOLD" in items:
            self.holding.set()
            if not self.release.wait(WAIT):
                raise RuntimeError("test never released HOLD")
        if "boom" in items:
            raise ValueError("injected failure")
        if self.delay:
            time.sleep(self.delay)
        out = direct(items)
        return out[:-1] if "short" in items else out

    @property
    def seen(self) -> collections.Counter:
        with self.lock:
            return collections.Counter(item for batch in self.batches for item in batch)


@pytest.fixture
def make():
    made: list[tuple[DynamicBatcher, FakeEncoder]] = []

    def _make(enc, **options) -> DynamicBatcher:
        batcher = DynamicBatcher(enc, **options)
        made.append((batcher, enc))
        return batcher

    yield _make
    for batcher, enc in made:
        if isinstance(enc, FakeEncoder):
            enc.release.set()
        assert batcher.close(drain=False, timeout=WAIT)


def hold(batcher: DynamicBatcher, enc: FakeEncoder):
    """Park the worker inside encode_fn; returns the HOLD request's future."""
    future = batcher.submit(["HOLD"])
    assert enc.holding.wait(WAIT)
    return future


def make_requests(seed: int, n: int, pad: int = 20) -> list[list[str]]:
    rng = random.Random(seed)
    return [[f"s{seed}-r{r}-i{i}-" + "x" * rng.randint(0, pad) for i in range(rng.randint(1, 4))] for r in range(n)]


def eventually(check) -> bool:
    """Counters settle a moment after callers wake (done-callbacks run after the result is set)."""
    deadline = time.monotonic() + WAIT
    while not check() and time.monotonic() < deadline:
        time.sleep(0.005)
    return check()


def run_threads(target, n: int) -> None:
    threads = [threading.Thread(target=target, args=(t,)) for t in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
        assert not thread.is_alive()


# --------------------------------------------------------------- exactness
def test_threads_get_exact_rows_none_lost_or_duplicated(make):
    enc = FakeEncoder()
    batcher = make(enc, max_batch_size=32, max_wait_ms=2)
    plans = {t: make_requests(t, 100) for t in range(32)}
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            results[t] = [batcher.encode(items, timeout=WAIT) for items in plans[t]]
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    run_threads(worker, 32)
    assert errors == []
    for t, plan in plans.items():
        for items, got in zip(plan, results[t], strict=True):
            assert got.shape == (len(items), DIM) and got.dtype == np.float32
            assert np.array_equal(got, direct(items))
    submitted = collections.Counter(item for plan in plans.values() for items in plan for item in items)
    assert enc.seen == submitted  # every item computed exactly once
    assert eventually(lambda: batcher.stats().pending == 0)
    stats = batcher.stats()
    assert stats.requests == 3200 and stats.items == sum(submitted.values())
    assert stats.batches == len(enc.batches) < 3200
    assert stats.failed_batches == stats.dropped == stats.rejected == stats.pending == 0
    assert stats.mean_batch_size > 1


def test_asyncio_tasks_get_exact_rows(make):
    enc = FakeEncoder()
    batcher = make(enc, max_batch_size=64, max_wait_ms=2)
    plans = [make_requests(1000 + t, 5) for t in range(200)]

    async def task(plan):
        return [await batcher.aencode(items, timeout=WAIT) for items in plan]

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(task(plan) for plan in plans)), WAIT * 3)

    results = asyncio.run(main())
    for plan, got in zip(plans, results, strict=True):
        for items, rows in zip(plan, got, strict=True):
            assert np.array_equal(rows, direct(items))
    assert enc.seen == collections.Counter(i for plan in plans for items in plan for i in items)
    assert len(enc.batches) < 1000


def test_async_timeout_and_cancel_drop_queued_requests(make):
    enc = FakeEncoder()
    batcher = make(enc, max_wait_ms=0)

    async def main():
        held = hold(batcher, enc)
        with pytest.raises(RequestTimeout):
            await batcher.aencode(["async-late"], timeout=0.05)
        task = asyncio.ensure_future(batcher.aencode(["async-cancelled"]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        enc.release.set()
        assert np.array_equal(await batcher.aencode(["async-ok"], timeout=WAIT), direct(["async-ok"]))
        return held

    held = asyncio.run(main())
    assert held.result(WAIT).shape == (1, DIM)
    assert enc.seen["async-late"] == enc.seen["async-cancelled"] == 0
    assert batcher.stats().dropped == 2


# ------------------------------------------------------------------ faults
def test_failed_batch_fails_only_its_callers(make):
    enc = FakeEncoder()
    batcher = make(enc, max_batch_size=2, max_wait_ms=1)
    held = hold(batcher, enc)
    same = [batcher.submit(["boom"]), batcher.submit(["b1"])]  # one batch of 2
    other = [batcher.submit(["c1"]), batcher.submit(["d1"])]  # the next batch
    enc.release.set()
    assert held.result(WAIT).shape == (1, DIM)
    for future in same:
        error = future.exception(WAIT)
        assert isinstance(error, BatchFailed) and isinstance(error, BowrtError)
        assert isinstance(error.__cause__, ValueError) and "injected" in str(error.__cause__)
    for future, item in zip(other, ["c1", "d1"]):
        assert np.array_equal(future.result(WAIT), direct([item]))
    assert np.array_equal(batcher.encode(["later"], timeout=WAIT), direct(["later"]))
    assert batcher.stats().failed_batches == 1


def test_wrong_row_count_is_a_batch_failure(make):
    batcher = make(FakeEncoder(), max_wait_ms=0)
    with pytest.raises(BatchFailed, match="one row per item"):
        batcher.encode(["short", "s2"], timeout=WAIT)
    wrong_type = make(lambda items: [[0.0]] * len(items), max_wait_ms=0)
    with pytest.raises(BatchFailed, match="list"):
        wrong_type.encode(["a"], timeout=WAIT)
    assert np.array_equal(batcher.encode(["fine"], timeout=WAIT), direct(["fine"]))


def test_requests_behind_a_slow_batch_coalesce(make):
    enc = FakeEncoder()
    batcher = make(enc, max_batch_size=64, max_wait_ms=1)
    held = hold(batcher, enc)
    futures = {f"slow-{i}": batcher.submit([f"slow-{i}"]) for i in range(20)}
    enc.release.set()
    for item, future in futures.items():
        assert np.array_equal(future.result(WAIT), direct([item]))
    assert held.done()
    assert len(enc.batches) == 2  # HOLD, then all 20 waiting requests at once


def test_timeout_while_queued_is_dropped_before_compute(make):
    enc = FakeEncoder()
    batcher = make(enc, max_wait_ms=1)
    held = hold(batcher, enc)
    start = time.monotonic()
    with pytest.raises(RequestTimeout) as caught:
        batcher.encode(["late-blocking"], timeout=0.1)
    assert isinstance(caught.value, TimeoutError) and time.monotonic() - start < WAIT / 2
    late = batcher.submit(["late-future"], timeout=0.05)
    keep = batcher.submit(["kept"])
    time.sleep(0.1)
    enc.release.set()
    assert np.array_equal(keep.result(WAIT), direct(["kept"]))
    assert isinstance(late.exception(WAIT), RequestTimeout)
    assert held.result(WAIT).shape == (1, DIM)
    assert enc.seen["late-blocking"] == enc.seen["late-future"] == 0
    assert batcher.stats().dropped == 2


def test_cancelled_future_is_dropped(make):
    enc = FakeEncoder()
    batcher = make(enc, max_wait_ms=1)
    hold(batcher, enc)
    gone = batcher.submit(["gone"])
    assert gone.cancel()
    enc.release.set()
    assert np.array_equal(batcher.encode(["after"], timeout=WAIT), direct(["after"]))
    with pytest.raises(CancelledError):
        gone.result(0)
    assert enc.seen["gone"] == 0 and batcher.stats().dropped == 1


def test_full_queue_rejects_fast_or_after_blocking(make):
    enc = FakeEncoder()
    batcher = make(enc, max_queue=2, max_wait_ms=0)
    held = hold(batcher, enc)  # pending: 1 (running)
    queued = batcher.submit(["queued"])  # pending: 2 = max_queue
    start = time.monotonic()
    with pytest.raises(Overloaded):
        batcher.submit(["x-fast"])
    assert time.monotonic() - start < 0.5
    start = time.monotonic()
    with pytest.raises(Overloaded):
        batcher.submit(["x-blocked"], block=True, queue_timeout=0.2)
    assert 0.19 <= time.monotonic() - start < WAIT / 2
    with pytest.raises(Overloaded):
        batcher.encode(["x-encode"])
    timer = threading.Timer(0.1, enc.release.set)
    timer.start()
    admitted = batcher.submit(["admitted"], block=True, queue_timeout=WAIT)  # room frees on release
    timer.join(WAIT)
    for future, item in [(held, "HOLD"), (queued, "queued"), (admitted, "admitted")]:
        assert np.array_equal(future.result(WAIT), direct([item]))
    assert batcher.stats().rejected == 3
    assert not {"x-fast", "x-blocked", "x-encode"} & set(enc.seen)


def test_prepare_fn_rejects_only_the_bad_caller(make):
    def prepare(items):
        if any(item.startswith("bad") for item in items):
            raise InputError("bad item")
        return items

    enc = FakeEncoder()
    batcher = make(enc, max_batch_size=16, max_wait_ms=2, prepare_fn=prepare)
    outcomes: list[tuple[list[str], object]] = []

    def worker(t: int) -> None:
        for r, items in enumerate(make_requests(2000 + t, 40)):
            if r % 7 == 3:
                items = items + [f"bad-{t}-{r}"]
            try:
                outcomes.append((items, batcher.encode(items, timeout=WAIT)))
            except InputError as exc:
                outcomes.append((items, exc))

    run_threads(worker, 16)
    for items, outcome in outcomes:
        if any(item.startswith("bad") for item in items):
            assert isinstance(outcome, InputError)
        else:
            assert np.array_equal(outcome, direct(items))
    assert not any(item.startswith("bad") for item in enc.seen)
    assert batcher.stats().failed_batches == 0


def test_prepare_fn_output_is_what_is_queued_and_costed(make):
    """The queue holds prepare_fn's output (an Encoder's token rows); cost_fn measures it;
    the future carries the request's size and cost; on_batch hears of every batch."""
    reports = []
    enc = FakeEncoder(delay=0.02)
    batcher = make(enc, max_wait_ms=0, prepare_fn=lambda items: [s.upper() for s in items], cost_fn=len,
                   max_batch_tokens=1000, on_batch=reports.append)
    future = batcher.submit(["ab", "cde"])
    assert np.array_equal(future.result(timeout=WAIT), direct(["AB", "CDE"]))
    assert (future.size, future.cost) == (2, 5)
    assert future.compute_s >= 0.02 and future.queue_wait_s >= 0  # its own timings, on its own result
    assert enc.batches == [["AB", "CDE"]]
    assert sum(r.rows for r in reports) == 2 and not any(r.failed for r in reports)
    assert len([w for r in reports for w in r.queue_waits_s]) == 1 and all(r.compute_s >= 0 for r in reports)
    with pytest.raises(OptionError, match="one entry per item"):
        make(FakeEncoder(), prepare_fn=lambda items: items[:1]).submit(["a", "b"])


# --------------------------------------------------------------- budgets
def test_token_budget_counts_padding(make):
    budget = 64
    enc = FakeEncoder()
    batcher = make(enc, max_batch_size=16, max_batch_tokens=budget, max_wait_ms=3, cost_fn=len)
    plans = {t: make_requests(3000 + t, 30, pad=30) for t in range(16)}

    def worker(t: int) -> None:
        for items in plans[t]:
            assert np.array_equal(batcher.encode(items, timeout=WAIT), direct(items))

    run_threads(worker, 16)
    huge = "h" * 100  # above the budget alone: runs as a batch of one
    assert np.array_equal(batcher.encode([huge], timeout=WAIT), direct([huge]))
    wide = [f"w{i:02d}-" + "x" * 16 for i in range(10)]  # cost 20 each: at most 3 per batch
    assert np.array_equal(batcher.encode(wide, timeout=WAIT), direct(wide))
    for batch in enc.batches:
        assert len(batch) == 1 or max(map(len, batch)) * len(batch) <= budget
    assert [len(b) for b in enc.batches if b[0].startswith("w")] == [3, 3, 3, 1]
    assert sum(enc.seen.values()) == sum(len(items) for plan in plans.values() for items in plan) + 11


def test_request_larger_than_max_batch_size_is_split_and_reassembled(make):
    enc = FakeEncoder()
    batcher = make(enc, max_batch_size=3, max_wait_ms=1)
    items = [f"big-{i}" for i in range(10)]
    assert np.array_equal(batcher.encode(items, timeout=WAIT), direct(items))
    assert [len(batch) for batch in enc.batches] == [3, 3, 3, 1]


def test_max_wait_ms_bounds_a_lone_request(make):
    batcher = make(FakeEncoder(), max_wait_ms=50)
    start = time.monotonic()
    batcher.encode(["alone"], timeout=WAIT)
    elapsed = time.monotonic() - start
    assert 0.045 <= elapsed < 1.0  # waited for company, but not much longer
    quick = make(FakeEncoder(), max_wait_ms=1)
    start = time.monotonic()
    quick.encode(["alone-quick"], timeout=WAIT)
    assert time.monotonic() - start < 0.5


# ------------------------------------------------------------------ close
def test_close_under_load_drains_everything_accepted(make):
    enc = FakeEncoder(delay=0.002)
    batcher = make(enc, max_batch_size=8, max_wait_ms=1)
    accepted: list[tuple[list[str], object]] = []
    refused = collections.Counter()

    def worker(t: int) -> None:
        for items in make_requests(4000 + t, 300):
            try:
                accepted.append((items, batcher.submit(items, block=True, queue_timeout=WAIT)))
            except BatcherClosed:
                refused[t] += 1
                return
            time.sleep(0.0005)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT
    while len(accepted) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.close(drain=True, timeout=WAIT)
    for thread in threads:
        thread.join(WAIT)
    assert all(future.done() for _, future in accepted)  # worker stopped only after draining
    for items, future in accepted:
        assert np.array_equal(future.result(0), direct(items))
    assert sum(refused.values()) == 8  # each thread hit the closed batcher once, then stopped
    with pytest.raises(BatcherClosed):
        batcher.submit(["after-close"])
    with pytest.raises(BatcherClosed):
        batcher.encode(["after-close"])


def test_close_without_drain_fails_what_is_queued(make):
    enc = FakeEncoder()
    batcher = make(enc, max_wait_ms=1)
    held = hold(batcher, enc)
    queued = batcher.submit(["never"])
    assert not batcher.close(drain=False, timeout=0.05)  # worker still parked in HOLD
    enc.release.set()
    assert batcher.close(timeout=WAIT)
    assert held.result(WAIT).shape == (1, DIM)
    assert isinstance(queued.exception(WAIT), BatcherClosed)
    assert enc.seen["never"] == 0


def test_close_without_drain_fails_a_half_run_split_request(make):
    enc = FakeEncoder()
    batcher = make(enc, max_batch_size=2, max_wait_ms=1)
    split = batcher.submit(["HOLD", "part-1", "part-2"])  # chunks: [HOLD, part-1], [part-2]
    assert enc.holding.wait(WAIT)
    assert not batcher.close(drain=False, timeout=0.05)
    enc.release.set()
    assert batcher.close(timeout=WAIT)
    assert isinstance(split.exception(WAIT), BatcherClosed)
    assert enc.seen["part-2"] == 0 and eventually(lambda: batcher.stats().pending == 0)


def test_context_manager_drains_on_exit():
    enc = FakeEncoder()
    with DynamicBatcher(enc, max_wait_ms=20) as batcher:
        futures = [batcher.submit([f"ctx-{i}"]) for i in range(10)]
    assert all(future.done() for future in futures)
    assert [future.result(0)[0].tolist() for future in futures] == [row_of(f"ctx-{i}").tolist() for i in range(10)]
    with pytest.raises(BatcherClosed):
        batcher.submit(["late"])


# ------------------------------------------------------------ edge, options
def test_empty_request_and_wrong_item_types(make):
    enc = FakeEncoder()
    batcher = make(enc, max_wait_ms=0)
    empty = batcher.encode([])
    assert empty.shape == (0, 0) and empty.dtype == np.float32  # dim not known yet
    batcher.encode(["first"], timeout=WAIT)
    assert batcher.encode([]).shape == (0, DIM)  # learned from the last batch
    assert len(enc.batches) == 1
    with pytest.raises(InputTypeError):
        batcher.encode("not a list")
    assert np.array_equal(batcher.encode(("tu", "ple"), timeout=WAIT), direct(["tu", "ple"]))


def test_stats_snapshot(make):
    batcher = make(FakeEncoder(), max_wait_ms=0)
    for i in range(5):
        batcher.encode([f"st-{i}", f"st-{i}b"], timeout=WAIT)
    stats = batcher.stats()
    assert isinstance(stats, BatcherStats)
    assert (stats.requests, stats.items, stats.batches) == (5, 10, 5)
    assert stats.mean_batch_size == 2.0
    assert 0 <= stats.queue_wait_ms.p50 <= stats.queue_wait_ms.p90 <= stats.queue_wait_ms.p99
    assert 0 <= stats.compute_ms.p50 <= stats.compute_ms.p99
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.requests = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an int >= 1"),
        ({"max_batch_size": 2.5}, "max_batch_size must be an int >= 1"),
        ({"max_queue": 0}, "max_queue must be an int >= 1"),
        ({"max_wait_ms": -1}, "max_wait_ms must be a finite number of milliseconds >= 0"),
        ({"max_wait_ms": float("inf")}, "max_wait_ms"),
        ({"max_batch_tokens": 0, "cost_fn": len}, "max_batch_tokens must be an int >= 1 or None"),
        ({"max_batch_tokens": 64}, "needs cost_fn"),
        ({"prepare_fn": "yes"}, "prepare_fn must be a callable"),
        ({"on_batch": 3}, "on_batch must be a callable"),
    ],
)
def test_invalid_options_say_the_valid_range(options, message):
    with pytest.raises(OptionError, match=message):
        DynamicBatcher(FakeEncoder(), **options)


def test_unknown_options_and_bad_call_arguments(make):
    with pytest.raises(TypeError):
        DynamicBatcher(FakeEncoder(), max_batch=8)  # type: ignore[call-arg]
    with pytest.raises(OptionError, match="encode_fn"):
        DynamicBatcher(None)  # type: ignore[arg-type]
    batcher = make(FakeEncoder())
    with pytest.raises(OptionError, match="timeout must be"):
        batcher.submit(["a"], timeout=-1)
    with pytest.raises(OptionError, match="cost_fn must return an int"):
        make(FakeEncoder(), max_batch_tokens=8, cost_fn=lambda item: "many").submit(["a"])


def test_batcher_module_imports_no_onnxruntime():
    # bowrt/runtime/__init__.py may import the session (and onnxruntime); the
    # batcher module itself must not, so it is loaded under a bare package.
    code = (
        "import sys, types, pathlib, bowrt\n"
        "pkg = types.ModuleType('bowrt.runtime')\n"
        "pkg.__path__ = [str(pathlib.Path(bowrt.__file__).parent / 'runtime')]\n"
        "sys.modules['bowrt.runtime'] = pkg\n"
        "import bowrt.runtime.batcher\n"
        "heavy = {'onnxruntime', 'torch', 'transformers', 'tokenizers'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
