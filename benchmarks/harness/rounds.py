"""The timed part of a run: one warm-up round, then N measured rounds, interleaved.

In round r every system runs every workload once, the system order rotating by one each
round, so that drift (thermal, other tenants) hits all systems alike. Raw figures go into
one record (``rec[workload][system]``: per round, the latency samples in ms or the seconds
of one call); :mod:`benchmarks.harness.gather` turns it into medians. A system that fails
is dropped with its reason, and the rest of the run goes on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np

from benchmarks.harness import machine, workloads
from benchmarks.harness.config import CLIENTS, LATENCY_WARM_CALLS, MODES, PAUSE_S, WARM_CORPUS, BenchConfig
from benchmarks.harness.spec import is_bowrt

Log = Callable[[str], None]


def runs(name: str, wl: str) -> bool:
    """Whether system ``name`` runs workload ``wl``: concurrency drives bowrt's own dynamic batcher only."""
    return wl != "concurrent" or is_bowrt(name)


def run_workload(name: str, sys_: Any, wl: str, texts: workloads.Texts, cfg: BenchConfig, rec: dict[str, Any],
                 warm: bool = False) -> None:
    """One workload on one system, its raw figures appended to ``rec``."""
    calls = getattr(sys_, "calls", None)  # a peer worker's (round trip s, inside the worker s) per encode
    if calls is not None:
        calls.clear()
    if wl == "latency":
        _latency(name, sys_, texts, cfg, rec, warm)
    elif wl in ("batch32x128", "corpus"):
        passages = texts.batch if wl == "batch32x128" else texts.corpus
        if warm:
            passages = passages[:4] if wl == "batch32x128" else passages[:WARM_CORPUS]
        rec.setdefault(wl, {}).setdefault(name, []).append(workloads.throughput(sys_.encode, passages))
    elif wl == "concurrent" and runs(name, wl):
        _concurrent(name, sys_, texts, cfg, rec, warm)
    if calls:
        inside_worker(name, wl, rec, calls)


def _latency(name: str, sys_: Any, texts: workloads.Texts, cfg: BenchConfig, rec: dict[str, Any], warm: bool) -> None:
    calls = 5 if warm else cfg.latency_calls + LATENCY_WARM_CALLS
    if hasattr(sys_, "record"):  # bowrt: keep each call's stage timings for the overhead table
        sys_.record, sys_.log = True, []
    samples = workloads.latency(sys_.encode, texts.queries, calls)
    if hasattr(sys_, "record"):
        sys_.record = False
        rec.setdefault("timings", {}).setdefault(name, []).extend(sys_.log[LATENCY_WARM_CALLS:])
    rec.setdefault("latency", {}).setdefault(name, []).append(samples[LATENCY_WARM_CALLS:])


def _concurrent(name: str, sys_: Any, texts: workloads.Texts, cfg: BenchConfig, rec: dict[str, Any], warm: bool) -> None:
    for clients in (4,) if warm else CLIENTS:
        for mode in MODES:
            r = workloads.concurrent(sys_.encoder, texts.queries, clients, 0.3 if warm else cfg.concurrent_s, mode)
            rec.setdefault("concurrent", {}).setdefault(name, {}).setdefault(mode, {}).setdefault(str(clients), []).append(r)


def inside_worker(name: str, wl: str, rec: dict[str, Any], calls: list[tuple[float, float]]) -> None:
    """A worker system's figure: the time inside the worker (what the peer costs in a user's own process);
    the round trip's extra (pipes, .npy) goes to ``rec["ipc"]``, reported next to it."""
    if wl == "latency":
        rec[wl][name][-1] = [inner * 1000.0 for _, inner in calls[LATENCY_WARM_CALLS:]]
    elif wl in ("batch32x128", "corpus"):
        rec[wl][name][-1] = calls[-1][1]
    else:
        return
    rec.setdefault("ipc", {}).setdefault(name, {}).setdefault(wl, []).extend(
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


def measured_rounds(loaded: dict[str, Any], info: dict[str, Any], texts: workloads.Texts, cfg: BenchConfig,
                    log: Log) -> dict[str, Any]:
    """``cfg.n_rounds`` interleaved rounds (the order rotates by one system a round); the raw record."""
    rec: dict[str, Any] = {}
    order = list(loaded)
    steps = [(r, n, wl) for r in range(cfg.n_rounds) for n in _rotated(order, r) for wl in cfg.workloads if runs(n, wl)]
    bar = _Progress(len(steps), log)
    for i, (r, n, wl) in enumerate(steps):
        if n in loaded:
            bar.show(i, f"round {r + 1}/{cfg.n_rounds} {n} {wl}")
            try:
                run_workload(n, loaded[n], wl, texts, cfg, rec)
            except Exception as e:
                drop(n, loaded, info, f"failed in round {r + 1} ({wl}): {type(e).__name__}: {e}", bar.write)
                for per_wl in rec.values():
                    per_wl.pop(n, None)
        if i + 1 == len(steps) or steps[i + 1][:2] != (r, n):
            time.sleep(PAUSE_S)  # between systems: spinning worker threads go idle
    bar.close()
    return rec


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
