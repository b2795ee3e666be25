"""From the raw record of the rounds to the figures of ``results.json``: medians [min-max], per round kept.

Every figure is summarized over rounds (:func:`benchmarks.harness.report.summarize`);
each system's per-round values stay under ``rounds`` so that the report can pair a bowrt
system with the fastest peer of the same round.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.harness import machine, systems, workloads
from benchmarks.harness.config import CLIENTS, LATENCY_WARM_CALLS, BenchConfig
from benchmarks.harness.report import summarize


def ceiling_fraction(name: str, flop: float, seconds: float | None, ceilings: dict[str, Any]) -> float | None:
    """Useful FLOP/s over the measured GEMM ceiling of the system's precision."""
    ceil = machine.ceiling_for(ceilings, systems.precision(name))
    return flop / seconds / (ceil * 1e9) if ceil and seconds else None


def latency_results(rec: dict[str, Any], texts: workloads.Texts, flops: dict[str, float], ceilings: dict[str, Any],
                    cfg: BenchConfig) -> dict[str, Any]:
    res = {}
    for n, rounds in rec.items():
        per_round = [float(np.percentile(r, 50)) for r in rounds]
        p50 = summarize(per_round)
        res[n] = {"p50_ms": p50, "rounds": per_round,
                  "p99_ms": summarize([float(np.percentile(r, 99)) for r in rounds]),
                  "mean_ms": summarize([float(np.mean(r)) for r in rounds]),
                  "samples_ms": [round(x, 4) for r in rounds for x in r],
                  "ceiling_fraction": ceiling_fraction(n, flops["latency"], p50["median"] / 1000.0, ceilings)}
    return {"description": f"{cfg.latency_calls} single-query calls per round, one after another "
            f"({texts.describe()['queries']['mean_tokens']} tokens on average); "
            f"{LATENCY_WARM_CALLS} warm-up calls dropped", "calls": cfg.latency_calls,
            "flops_per_call": flops["latency"], "results": res}


def throughput_results(wl: str, rec: dict[str, Any], texts: workloads.Texts, flops: dict[str, float],
                       ceilings: dict[str, Any]) -> dict[str, Any]:
    items = texts.batch_tokens if wl == "batch32x128" else texts.corpus_tokens
    res = {}
    for n, secs in rec.items():
        s, per_round = summarize(secs), [len(items) / x for x in secs]
        res[n] = {"seconds": s, "items_per_s": summarize(per_round), "rounds": per_round,
                  "tokens_per_s": summarize([sum(items) / x for x in secs]),
                  "ceiling_fraction": ceiling_fraction(n, flops[wl], s["median"], ceilings)}
    d = texts.describe()["batch" if wl == "batch32x128" else "corpus"]
    return {"description": f"one call with {d['n']} passages of {d['min_tokens']}-{d['max_tokens']} tokens "
            f"(mean {d['mean_tokens']}), the system's own batching", "items": len(items), "tokens": sum(items),
            "flops": flops[wl], "results": res}


def concurrent_results(rec: dict[str, Any], cfg: BenchConfig) -> dict[str, Any]:
    def point(rs: list[workloads.ConcurrentResult]) -> dict[str, Any]:
        return {"rps": summarize([r.rps for r in rs]),
                "p50_ms": summarize([float(np.percentile(r.latencies_ms, 50)) for r in rs]),
                "p99_ms": summarize([float(np.percentile(r.latencies_ms, 99)) for r in rs]),
                "mean_batch_size": float(np.median([r.mean_batch_size for r in rs])) if rs[0].mean_batch_size else None}

    res = {n: {mode: {c: point(rs) for c, rs in by_c.items()} for mode, by_c in by_mode.items()}
           for n, by_mode in rec.items()}
    return {"description": f"closed-loop clients sending single queries for {cfg.concurrent_s} s per "
            "point: 'batched' through DynamicBatcher (max 64 rows, max_wait 0 ms, the batcher's default; callers tokenize), "
            "'direct' = one encode_queries call per request from each client thread",
            "clients": list(CLIENTS), "duration_s": cfg.concurrent_s, "results": res}


def gather(rec: dict[str, Any], texts: workloads.Texts, flops: dict[str, float], ceilings: dict[str, Any],
           cfg: BenchConfig) -> dict[str, Any]:
    """``results.json``'s ``workloads``: one entry per workload that ran."""
    out: dict[str, Any] = {}
    if "latency" in rec:
        out["latency"] = latency_results(rec["latency"], texts, flops, ceilings, cfg)
    for wl in ("batch32x128", "corpus"):
        if wl in rec:
            out[wl] = throughput_results(wl, rec[wl], texts, flops, ceilings)
    if "concurrent" in rec:
        out["concurrent"] = concurrent_results(rec["concurrent"], cfg)
    return out
