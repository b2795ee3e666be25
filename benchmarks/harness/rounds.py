"""The timed part of a run: one warm-up round, then N measured rounds, interleaved.

In round r every system runs every workload once, the system order rotating by one each
round, so that drift (thermal, other tenants) hits all systems alike. Batch-1 latency and
the corpus are interleaved finer, because this VM has slow phases of several seconds that
slow every system alike (docs/benchmarks.md): each round opens with every system taking
short turns on the same queries (:func:`latency_round`); the corpus runs batch by batch,
every system taking turns with one of its own batches at a time (:func:`corpus_turns`), so
that each system's batches spread over the same seconds; and the corpus by length closes
each round the same way, one length bucket after another (:func:`bucket_round`).
Raw figures go into one record (``rec[workload][system]``: per round, the latency samples
in ms or the seconds of the workload; ``rec["corpus_buckets"][system][bucket]``: seconds per
round);
:mod:`benchmarks.harness.gather` turns it into medians. A system that fails is dropped
with its reason, and the rest of the run goes on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np

from benchmarks.harness import machine, workloads
from benchmarks.harness.config import (
    CLIENTS,
    CORPUS_BUCKETS,
    LATENCY_BLOCK,
    LATENCY_BLOCK_PAUSE_S,
    LATENCY_WARM_CALLS,
    MODES,
    PAUSE_S,
    WARM_CORPUS,
    BenchConfig,
)
from benchmarks.harness.spec import is_bowrt

Log = Callable[[str], None]


def runs(name: str, wl: str) -> bool:
    """Whether system ``name`` runs workload ``wl``: concurrency drives bowrt's own dynamic batcher only."""
    return wl != "concurrent" or is_bowrt(name)


def run_workload(name: str, sys_: Any, wl: str, texts: workloads.Texts, cfg: BenchConfig, rec: dict[str, Any],
                 warm: bool = False) -> None:
    """One workload on one system, its raw figures appended to ``rec`` (latency: this system alone,
    as the warm-up runs it; the measured rounds interleave every system, :func:`latency_round`)."""
    if wl == "latency":
        failed = latency_round({name: sys_}, texts, cfg, rec, warm)
        if failed:
            raise failed[name]
        return
    calls = getattr(sys_, "calls", None)  # a peer worker's (round trip s, inside the worker s) per encode
    if calls is not None:
        calls.clear()
    if wl in ("batch32x128", "corpus"):
        passages = texts.batch if wl == "batch32x128" else texts.corpus
        if warm:
            passages = passages[:4] if wl == "batch32x128" else passages[:WARM_CORPUS]
        rec.setdefault(wl, {}).setdefault(name, []).append(workloads.throughput(sys_.encode, passages))
    elif wl == "concurrent" and runs(name, wl):
        _concurrent(name, sys_, texts, cfg, rec, warm)
    if calls:
        inside_worker(name, wl, rec, calls)


def corpus_turns(loaded: dict[str, Any], passages: list[str], rec: dict[str, Any], shift: int = 0,
                 ipc: str = "corpus") -> tuple[dict[str, float], dict[str, Exception]]:
    """Every system in ``loaded`` encodes ``passages``, batch by batch, the systems taking turns.

    A system with ``batches`` (see :mod:`benchmarks.harness.adapters`) is called once per batch
    group, with that group's passages: the same batches, padded alike, that one call with the
    whole list runs. A system without it makes one call. :func:`workloads.piece_order` picks the
    turns (``shift`` rotates the order), a pause between two systems' turns. Returns (seconds per
    system: the sum over its calls, a worker system's inside the worker; the systems that raised,
    with their exception). A raising system is out; the others go on. A worker system's round-trip
    extra per call goes to ``rec["ipc"][name][ipc]``."""
    groups: dict[str, list[list[int]]] = {}
    failed: dict[str, Exception] = {}
    for n, s in loaded.items():
        try:
            got = s.batches(passages, "passage") if hasattr(s, "batches") else [list(range(len(passages)))]
            groups[n] = workloads.check_groups(got, len(passages))
        except Exception as e:  # reported by the caller, the other systems go on
            failed[n] = e
    seconds = dict.fromkeys(groups, 0.0)
    last = None
    for n, k in workloads.piece_order({n: len(g) for n, g in groups.items()}, shift):
        if n in failed:
            continue
        if last not in (None, n):
            time.sleep(PAUSE_S)  # the previous system's spinning threads go idle
        calls = getattr(loaded[n], "calls", None)
        if calls is not None:
            calls.clear()
        try:
            dt = workloads.throughput(loaded[n].encode, [passages[i] for i in groups[n][k]])
        except Exception as e:
            failed[n] = e
            continue
        if calls:
            dt = calls[-1][1]
            _ipc(rec, n, ipc, calls)
        seconds[n] += dt
        last = n
    time.sleep(PAUSE_S)
    return {n: v for n, v in seconds.items() if n not in failed}, failed


def corpus_round(loaded: dict[str, Any], texts: workloads.Texts, rec: dict[str, Any],
                 shift: int = 0) -> dict[str, Exception]:
    """The corpus workload of one round (:func:`corpus_turns`): ``rec["corpus"][name]`` gains this
    round's seconds. Returns the systems that raised."""
    seconds, failed = corpus_turns(loaded, texts.corpus, rec, shift)
    for n, v in seconds.items():
        rec.setdefault("corpus", {}).setdefault(n, []).append(v)
    return failed


def bucket_round(loaded: dict[str, Any], texts: workloads.Texts, rec: dict[str, Any],
                 shift: int = 0) -> dict[str, Exception]:
    """The corpus by length in one round: one length bucket after another, every system in
    ``loaded`` encodes that bucket's passages in turns (:func:`corpus_turns`). So the calls that a
    bucket's paired ratio compares interleave within seconds, not a round apart (this VM's speed
    drifts by 20 % within a minute). ``rec["corpus_buckets"][name][label]`` gains this round's
    seconds. Returns the systems that raised, with their exception; they add nothing more."""
    failed: dict[str, Exception] = {}
    for label, (passages, _) in workloads.corpus_buckets(texts, CORPUS_BUCKETS).items():
        seconds, bad = corpus_turns({n: s for n, s in loaded.items() if n not in failed}, passages, rec, shift,
                                    ipc="corpus_buckets")
        failed.update(bad)
        for n, v in seconds.items():
            rec.setdefault("corpus_buckets", {}).setdefault(n, {}).setdefault(label, []).append(v)
    return failed


def latency_round(loaded: dict[str, Any], texts: workloads.Texts, cfg: BenchConfig, rec: dict[str, Any],
                  warm: bool = False, shift: int = 0) -> dict[str, Exception]:
    """The latency workload of one round: every system in ``loaded``, in turns of
    :data:`LATENCY_BLOCK` calls in a rotating order (:func:`workloads.interleaved_latency`);
    ``rec["latency"][name]`` gains this round's counted samples. bowrt systems record each call's
    stage timings (the overhead table), worker systems report the time inside the worker. Returns
    the systems that raised, with their exception; they add nothing."""
    for s in loaded.values():
        if getattr(s, "calls", None) is not None:
            s.calls.clear()
        if hasattr(s, "record"):  # bowrt: keep each call's stage timings for the overhead table
            s.record, s.log = True, []
    samples, kept, failed = workloads.interleaved_latency(
        {n: s.encode for n, s in loaded.items()}, texts.queries, 3 if warm else cfg.latency_calls, shift,
        block=LATENCY_BLOCK, warm=LATENCY_WARM_CALLS, pause_s=0.0 if warm else LATENCY_BLOCK_PAUSE_S)
    for n, s in loaded.items():
        if hasattr(s, "record"):
            s.record = False
        if n in failed:
            continue
        if hasattr(s, "record"):
            rec.setdefault("timings", {}).setdefault(n, []).extend(s.log[j] for j in kept)
        rec.setdefault("latency", {}).setdefault(n, []).append([samples[n][j] for j in kept])
        if getattr(s, "calls", None):
            inside_worker(n, "latency", rec, s.calls, kept)
    return failed


def _concurrent(name: str, sys_: Any, texts: workloads.Texts, cfg: BenchConfig, rec: dict[str, Any], warm: bool) -> None:
    for clients in (4,) if warm else CLIENTS:
        for mode in MODES:
            r = workloads.concurrent(sys_.encoder, texts.queries, clients, 0.3 if warm else cfg.concurrent_s, mode)
            rec.setdefault("concurrent", {}).setdefault(name, {}).setdefault(mode, {}).setdefault(str(clients), []).append(r)


def inside_worker(name: str, wl: str, rec: dict[str, Any], calls: list[tuple[float, float]],
                  kept: list[int] | None = None) -> None:
    """A worker system's figure: the time inside the worker (what the peer costs in a user's own process);
    the round trip's extra (pipes, .npy) goes to ``rec["ipc"]``, reported next to it. ``kept``: the
    latency calls that count (the rest warmed a turn up)."""
    if wl == "latency":
        rec[wl][name][-1] = [calls[j][1] * 1000.0 for j in (range(len(calls)) if kept is None else kept)]
    elif wl in ("batch32x128", "corpus"):
        rec[wl][name][-1] = calls[-1][1]
    else:
        return
    _ipc(rec, name, wl, calls)


def _ipc(rec: dict[str, Any], name: str, key: str, calls: list[tuple[float, float]]) -> None:
    """``rec["ipc"][name][key]`` gains each call's round trip less its time inside the worker, in ms."""
    rec.setdefault("ipc", {}).setdefault(name, {}).setdefault(key, []).extend(
        (outer - inner) * 1000.0 for outer, inner in calls)


def ipc_summary(ipc: dict[str, Any]) -> dict[str, Any]:
    """Per worker system and workload: median milliseconds a call spent outside the worker (the IPC)."""
    return {n: {wl: {"median_ms": float(np.median(v)), "max_ms": float(np.max(v)), "calls": len(v)}
                for wl, v in by_wl.items()} for n, by_wl in ipc.items()}


def drop(name: str, loaded: dict[str, Any], info: dict[str, Any], reason: str, log: Log) -> None:
    """Take a failed system out of the run; the report shows why."""
    loaded.pop(name, None)
    info[name] = {**info.get(name, {}), "status": "unavailable", "reason": reason}
    log(f"  {name}: {reason}")


def warm_up(loaded: dict[str, Any], info: dict[str, Any], texts: workloads.Texts, cfg: BenchConfig,
            log: Log) -> dict[str, Any]:
    """One short round of every workload on every system (not counted); a system that fails here is dropped."""
    warm: dict[str, Any] = {}
    for n, s in list(loaded.items()):
        try:
            for wl in cfg.workloads:
                if runs(n, wl):
                    run_workload(n, s, wl, texts, cfg, warm, warm=True)
        except Exception as e:  # a peer that breaks on these inputs is reported, not fatal
            drop(n, loaded, info, f"failed in the warm-up: {type(e).__name__}: {e}", log)
        time.sleep(PAUSE_S)
    return warm


def warm_rates(warm: dict[str, Any], loaded: dict[str, Any], config: dict[str, Any], texts: workloads.Texts,
               flops: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(FLOP/s, batch-1 seconds) each system reached in the warm-up, for the second estimate."""
    rate = {}
    for n in loaded:
        if n in warm.get("corpus", {}):
            rate[n] = machine.encoder_flops(config, texts.corpus_tokens[:WARM_CORPUS]) / warm["corpus"][n][0]
        elif n in warm.get("batch32x128", {}):
            rate[n] = flops["batch32x128"] / 8 / warm["batch32x128"][n][0]  # 4 of the 32 rows
    lat_s = {n: float(np.median(v[0])) / 1000 for n, v in warm.get("latency", {}).items()}
    return rate, lat_s


ALL = "every system"  # the name of a step that runs every system at once (latency, the corpus, its buckets)


INTERLEAVED = ("latency", "corpus")  # workloads that every system runs at once, in turns


def _steps(order: list[str], cfg: BenchConfig) -> list[tuple[int, str, str]]:
    """(round, system, workload) in run order: each round opens with the interleaved latency of every
    system, then each system (the order rotated by one a round) runs its other workloads, then the
    interleaved corpus and the corpus by length (every system, bucket by bucket) close the round."""
    steps = []
    for r in range(cfg.n_rounds):
        if "latency" in cfg.workloads:
            steps.append((r, ALL, "latency"))
        steps += [(r, n, wl) for n in _rotated(order, r) for wl in cfg.workloads
                  if wl not in INTERLEAVED and runs(n, wl)]
        if "corpus" in cfg.workloads:
            steps.append((r, ALL, "corpus"))
            if cfg.buckets:
                steps.append((r, ALL, "buckets"))
    return steps


def measured_rounds(loaded: dict[str, Any], info: dict[str, Any], texts: workloads.Texts, cfg: BenchConfig,
                    log: Log) -> dict[str, Any]:
    """``cfg.n_rounds`` interleaved rounds (the order rotates by one system a round); the raw record."""
    rec: dict[str, Any] = {}
    steps = _steps(list(loaded), cfg)
    bar = _Progress(len(steps), log)
    for i, (r, n, wl) in enumerate(steps):
        where = f"round {r + 1}/{cfg.n_rounds}"
        if n == ALL and loaded:
            bar.show(i, f"{where} {wl}, every system in turns")
            run_all = {"latency": lambda: latency_round(loaded, texts, cfg, rec, shift=r),
                       "corpus": lambda: corpus_round(loaded, texts, rec, shift=r),
                       "buckets": lambda: bucket_round(loaded, texts, rec, shift=r)}
            step = run_all[wl]()
            for m, e in step.items():
                _fail(m, f"failed in round {r + 1} ({wl}): {type(e).__name__}: {e}", loaded, info, rec, bar.write)
        elif n in loaded:
            bar.show(i, f"{where} {n} {wl}")
            try:
                run_workload(n, loaded[n], wl, texts, cfg, rec)
            except Exception as e:
                _fail(n, f"failed in round {r + 1} ({wl}): {type(e).__name__}: {e}", loaded, info, rec, bar.write)
        if i + 1 == len(steps) or steps[i + 1][:2] != (r, n):
            time.sleep(PAUSE_S)  # between systems: spinning worker threads go idle
    bar.close()
    return rec


def _fail(name: str, reason: str, loaded: dict[str, Any], info: dict[str, Any], rec: dict[str, Any], log: Log) -> None:
    """Drop a system that failed in a measured round, and every figure it had: a system is in the
    report with all its rounds or not at all, so the rounds of every system pair up."""
    drop(name, loaded, info, reason, log)
    for per_wl in rec.values():
        per_wl.pop(name, None)


def _rotated(order: list[str], r: int) -> list[str]:
    k = r % len(order)
    return order[k:] + order[:k]


class _Progress:
    """The rounds' progress: a tqdm bar on a terminal, else a line as each round starts (a log stays readable)."""

    def __init__(self, total: int, log: Log):
        from tqdm import tqdm

        self.log, self.round = log, None
        self.bar = tqdm(total=total, unit="run", desc="benchmark", file=sys.stderr, dynamic_ncols=True,
                        mininterval=2.0) if sys.stderr.isatty() else None

    def show(self, done: int, what: str) -> None:
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(what)
        elif what.split(" ")[1] != self.round:
            self.round = what.split(" ")[1]
            self.log(f"round {self.round} ...")

    def write(self, msg: str) -> None:
        (self.bar.write if self.bar is not None else self.log)(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = self.bar.total
            self.bar.close()
