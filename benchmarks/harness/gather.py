"""From the raw record of the rounds to the figures of ``results.json``: medians [min-max], per round kept.

Every figure is summarized over rounds (:func:`benchmarks.harness.report.summarize`);
each system's per-round values stay under ``rounds`` so that the report can pair a bowrt
system with the fastest peer of the same round.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.harness import machine, systems, workloads
from benchmarks.harness.adapters.common import BATCH
from benchmarks.harness.config import (
    CLIENTS,
    CORPUS_BUCKETS,
    LATENCY_BLOCK,
    LATENCY_BLOCK_PAUSE_S,
    LATENCY_WARM_CALLS,
    PAUSE_S,
    BenchConfig,
)
from benchmarks.harness.report import paired, summarize
from benchmarks.harness.spec import is_bowrt


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
    for n, pair in paired_per_call(rec).items():
        res[n]["paired_per_call"] = pair
    return {"description": f"{cfg.latency_calls} single-query calls per system and round "
            f"({texts.describe()['queries']['mean_tokens']} tokens on average), interleaved: the systems take turns "
            f"of {LATENCY_BLOCK} calls on the same queries, the order rotating by one system a turn, so that drift "
            f"hits all alike; the first {LATENCY_WARM_CALLS} calls of each turn (after a {LATENCY_BLOCK_PAUSE_S:g} s "
            "pause) are not counted, the previous system's threads may still spin. 'x best peer, per call': per round, the "
            "median over calls of (fastest peer's ms / bowrt's ms) for the same query, the fastest peer being the "
            "one with the lowest p50 in that round; then median [min–max] over rounds",
            "calls": cfg.latency_calls, "flops_per_call": flops["latency"], "results": res}


def paired_per_call(rec: dict[str, list[list[float]]]) -> dict[str, dict[str, Any]]:
    """Per bowrt system: per round, the median over calls of (peer ms / bowrt ms), against the peer with
    the lowest p50 of that round; summarized over rounds (> 1: bowrt is faster), with the rounds' values
    and peers. Call i of every system is the same query, run in the same turn (the interleaved latency),
    so each ratio pairs two calls a few ms apart: the drift between minutes cancels call by call."""
    peers = {n: rounds for n, rounds in rec.items() if not is_bowrt(n) and rounds}
    out = {}
    for n, rounds in rec.items():
        if not is_bowrt(n) or not peers:
            continue
        values, against = [], []
        for k, mine in enumerate(rounds):
            same = {p: r[k] for p, r in peers.items() if len(r) > k and len(r[k]) == len(mine) and mine}
            if not same:
                continue
            best = min(same, key=lambda p: float(np.median(same[p])))
            values.append(float(np.median(np.asarray(same[best]) / np.asarray(mine))))
            against.append(best)
        if values:
            out[n] = {**summarize(values), "rounds": values, "peers": against}
    return out


def _rates(secs: list[float], items: list[int]) -> dict[str, Any]:
    """A throughput call's figures from its seconds per round over ``items`` (token counts)."""
    per_round = [len(items) / x for x in secs]
    return {"seconds": summarize(secs), "items_per_s": summarize(per_round), "rounds": per_round,
            "tokens_per_s": summarize([sum(items) / x for x in secs])}


def throughput_results(wl: str, rec: dict[str, Any], texts: workloads.Texts, flops: dict[str, float],
                       ceilings: dict[str, Any]) -> dict[str, Any]:
    items = texts.batch_tokens if wl == "batch32x128" else texts.corpus_tokens
    res = {}
    for n, secs in rec.items():
        res[n] = {**_rates(secs, items), "ceiling_fraction": ceiling_fraction(n, flops[wl], float(np.median(secs)), ceilings)}
    d = texts.describe()["batch" if wl == "batch32x128" else "corpus"]
    what = f"{d['n']} passages of {d['min_tokens']}-{d['max_tokens']} tokens (mean {d['mean_tokens']}), the system's own batching"
    if wl == "corpus":
        what += (f", interleaved: every system runs its own batches one call at a time (bowrt's joined to at least "
                 f"{BATCH} passages, as many as a peer's batch), the systems taking turns so that each system's "
                 f"batches spread over the same seconds, {PAUSE_S:g} s apart; a system's figure is the sum over its calls")
    else:
        what = "one call with " + what
    return {"description": what, "items": len(items), "tokens": sum(items), "flops": flops[wl], "results": res}


def bucket_results(rec: dict[str, dict[str, list[float]]], texts: workloads.Texts, flops: dict[str, float],
                   ceilings: dict[str, Any]) -> dict[str, Any]:
    """``workloads["corpus"]["buckets"]``: per length bucket, each system's rate, its GEMM-ceiling
    fraction and, for bowrt, its speed over the fastest peer of the same round *in that bucket* (``paired``)."""
    out = {}
    for label, (_, tokens) in workloads.corpus_buckets(texts, CORPUS_BUCKETS).items():
        res = {n: {**_rates(by_label[label], tokens), "ceiling_fraction": ceiling_fraction(
                   n, flops.get(f"corpus {label}", 0.0), float(np.median(by_label[label])), ceilings)}
               for n, by_label in rec.items() if by_label.get(label)}
        for n, pair in paired(res, higher=True).items():
            res[n]["paired"] = pair
        out[label] = {"passages": len(tokens), "tokens": sum(tokens), "min_tokens": min(tokens),
                      "max_tokens": max(tokens), "results": res}
    return out


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
    if "corpus" in out and rec.get("corpus_buckets"):
        out["corpus"]["buckets"] = bucket_results(rec["corpus_buckets"], texts, flops, ceilings)
        out["corpus"]["buckets_description"] = (
            "at the end of each round, each length bucket's passages of the same corpus (in corpus order; every passage "
            "in one bucket, by token count with [CLS]/[SEP]), bucket by bucket, run as the corpus is: every system's own "
            "batches in turns (the order rotating by one a round) before the next bucket, so that the calls a ratio "
            "compares interleave within seconds; 'paired': per round, against the fastest peer of that "
            "round in that bucket, then median [min–max] over rounds; '% ceiling': useful FLOP/s over the GEMM rate")
    if "concurrent" in rec:
        out["concurrent"] = concurrent_results(rec["concurrent"], cfg)
    return out
