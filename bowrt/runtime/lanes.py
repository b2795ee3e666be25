"""Running a call's batches: one at a time on all threads, or side by side in lanes.

An Encoder on CPU runs a batch on all its ``threads`` (ORT's intra-op threads). For a call
of many batches it can instead run ``lanes`` batches at once on a second session of the
same graph, each batch on one thread: no thread waits on another inside an operator, and
each core keeps its own batch's activations in its own cache. A batch's vectors do not
depend on how many threads ran it (its rows are the same, each operator computes a row the
same way on one thread or two), so the two paths give the same bits; the tests check it.

Every batch of a call of two or more runs in lanes (:data:`LANE_MIN_TOKENS` is 0): whole
rounds of ``lanes`` batches on the lanes, the rest (fewer than ``lanes``) with the shorter
batches on the Encoder's own session, so that no core sits idle while a last batch runs on
one thread. The plan is longest first, so the batches for the lanes are the call's first
ones. With lanes, and no ``max_batch_tokens`` asked, short rows batch smaller
(:data:`LANE_NARROW`): rows of at most 64 tokens at 128 tokens a batch, of at most 128 at
256, of at most 192 at 384, longer ones at the CPU's 512. A call of one batch (a query
alone) runs on all threads.

Default: on for int8 bundles on CPU with two or more threads, off otherwise. Why it pays:
ORT's intra-op threads share every operator's tensors, and this VM's two vCPUs are placed
near each other (a cache-line round trip of about 70 ns) or far apart (about 330 ns) for
seconds at a time (``benchmarks/studies/core_latency.py``); far, one batch at a time on 2
threads ran 10.7 passages/s of 129-256 tokens, lanes 14.0; near, 17.1 and 17.9. Measured on a
2-core AMD EPYC (avx2 avx512_vnni avx512f), bert-base twin, calls of 32 passages, paired pass
by pass (``benchmarks/studies/batch_lanes.py``; on the twin every setting gave the same bits), over the
earlier default (lanes above 128 tokens only, 512 tokens a batch; setting ``2:512:128``),
default int8: 20-64 tokens, lanes at 128 tokens 1.16x and 1.17x in two studies, at 256 1.11x,
at 64 1.12x, at 192 or 384 1.06x-1.09x; 65-128, lanes at 128, 256 or 384 tokens 1.18x-1.19x;
129-256, rows of at most 192 tokens at 384 (two a batch, not three) 1.07x and 1.05x (speed)
over lanes at 512, 10 passes, and 1.03x for both in a first study (at 256 they ran 0.95x of
512; a flat 384, which also puts 193-256 rows one a batch, 1.03x / 0.99x; 768 0.95x). On a
20-256 mix, the two narrow tiers over the earlier default: 1.05x [0.89-1.16] (default int8)
and 1.08x [1.06-1.20] (speed profile), 10 passes each. Through the dynamic batcher (serve's
path; ``benchmarks/studies/batcher_narrow.py``) the narrow budgets gave 1.07x-1.29x at 64
clients, 1.00x at 4, and at 16 clients 0.94x-1.20x (default int8) and 0.89x-0.98x (speed).
fp32: lanes 0.99x, for 456 MB more (its lane session); so off. An int8 lane session costs
about 90 MB and 0.2 s at load. docs/benchmarks.md, "Batch lanes", has the runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np

from bowrt.errors import OptionError
from bowrt.runtime.tokenize import pad_batch

# Variants that run in lanes by default on CPU (measured above; fp32 did not pay).
DEFAULT_LANE_VARIANTS = ("int8",)
# Batches whose rows are padded to more tokens than this run in lanes (measured above: 0,
# every batch, with the narrow budgets below).
LANE_MIN_TOKENS = 0
# With lanes and the default budget, a batch whose rows have at most WIDTH tokens closes at
# TOKENS, not the CPU's 512: (WIDTH, TOKENS) tiers, narrowest first (measured above).
LANE_NARROW = ((64, 128), (128, 256), (192, 384))


def lane_count(asked: int | None, variant: str, provider: str, on_gpu: bool, threads: int) -> int:
    """The lanes an Encoder runs: ``asked`` (more than 1 on a GPU raises OptionError); when not
    asked, one per thread for the variants measured to gain (int8) on CPU with two or more
    threads, else 1 (no lanes)."""
    if asked is not None:
        if asked > 1 and on_gpu:
            raise OptionError(f"batch_lanes={asked} runs on CPU only; this Encoder runs on {provider}")
        return asked
    return threads if not on_gpu and threads >= 2 and variant in DEFAULT_LANE_VARIANTS else 1


class Lanes:
    """``count`` batches at once on ``session`` (built with one intra-op thread)."""

    def __init__(self, session, count: int, min_tokens: int = LANE_MIN_TOKENS):  # session: runtime.session.Session
        self.session = session
        self.count = count
        self.min_tokens = min_tokens
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="bowrt-lane")

    def share(self, widths: Sequence[int]) -> int:
        """How many of a call's batches, of padded ``widths`` longest first, run in lanes: the
        ones wider than ``min_tokens`` (:data:`LANE_MIN_TOKENS`), in whole rounds of ``count``."""
        wide = sum(1 for w in widths if w > self.min_tokens)
        return wide - wide % self.count

    def run(self, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
        """Run padded ``(ids, mask)`` batches; yield ``(position, vectors)`` as each finishes.
        The first failure is raised once the batches already running have stopped; the
        ones not started are cancelled."""
        futures = {self._pool.submit(self.session.run, ids, mask): i for i, (ids, mask) in enumerate(batches)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    yield futures[f], f.result()
        finally:
            for f in pending:
                f.cancel()
            wait(pending)


def run_plan(plan: list[list[int]], rows: Sequence[Sequence[int]], pad_id: int, session, lanes: Lanes | None,
             out: np.ndarray, on_batch: Callable[[int, int, int], None] | None) -> tuple[dict[str, float], int]:
    """Run the planned batches of ``rows`` (token ids), writing each batch's vectors into
    ``out`` at its rows' places; ``on_batch(batches_done, batches, rows_done)`` after each,
    in the caller's thread. Returns the seconds spent padding, running and placing, and
    the padded tokens computed."""
    spent = {"batch": 0.0, "inference": 0.0, "post": 0.0}
    counts = [0, 0, 0]  # batches done, rows done, padded tokens

    def finish(idx: list[int], vecs: np.ndarray, size: int) -> None:
        out[idx] = vecs  # back to the caller's order
        counts[0] += 1
        counts[1] += len(idx)
        counts[2] += size
        if on_batch is not None:
            on_batch(counts[0], len(plan), counts[1])

    shared = lanes.share([max(len(rows[i]) for i in idx) for idx in plan]) if lanes else 0
    if shared:  # the longest batches side by side, placed in the order they finish
        t0 = time.perf_counter()
        padded = [pad_batch([rows[i] for i in idx], pad_id) for idx in plan[:shared]]
        t1 = time.perf_counter()
        for j, vecs in lanes.run(padded):
            finish(plan[j], vecs, padded[j][0].size)
        spent["batch"] += t1 - t0
        spent["inference"] += time.perf_counter() - t1
    for idx in plan[shared:]:
        t0 = time.perf_counter()
        ids, mask = pad_batch([rows[i] for i in idx], pad_id)
        t1 = time.perf_counter()
        vecs = session.run(ids, mask)
        t2 = time.perf_counter()
        finish(idx, vecs, ids.size)
        spent["batch"] += t1 - t0
        spent["inference"] += t2 - t1
        spent["post"] += time.perf_counter() - t2
    return spent, counts[2]
