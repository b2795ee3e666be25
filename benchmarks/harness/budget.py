"""How long a run will take, and what ``--quick`` leaves out to stay within its budget.

The estimate is made twice: before loading, from the measured GEMM ceilings and a guessed
efficiency per precision, and after the warm-up, from each system's measured rate. It is
the run's own FLOP count of each workload (:func:`benchmarks.harness.machine.encoder_flops`)
over those rates, plus the fixed costs (pauses, concurrency points, fresh processes).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from benchmarks.harness import machine, systems, workloads
from benchmarks.harness.adapters.common import BATCH
from benchmarks.harness.config import (
    CLIENTS,
    CORPUS_BUCKETS,
    GUESSED_EFFICIENCY,
    LATENCY_BLOCK,
    LATENCY_BLOCK_PAUSE_S,
    LATENCY_WARM_CALLS,
    MODES,
    PAUSE_S,
    QUICK_BUDGET_S,
    QUICK_DROP_ORDER,
    QUICK_MIN_CORPUS,
    BenchConfig,
)
from benchmarks.harness.spec import SystemSpec, is_bowrt

Log = Callable[[str], None]


def guessed_rates(specs: dict[str, SystemSpec], ceilings: dict[str, Any]) -> dict[str, float]:
    """FLOP/s each system should reach, before anything ran: its precision's ceiling x a guessed efficiency."""
    fp32 = machine.ceiling_for(ceilings, "fp32") or 50.0
    out = {}
    for n in specs:
        p = systems.precision(n)
        out[n] = (machine.ceiling_for(ceilings, p) or fp32) * 1e9 * GUESSED_EFFICIENCY.get(p, 0.3)
    return out


def workload_flops(config: dict[str, Any], texts: workloads.Texts, cfg: BenchConfig) -> dict[str, float]:
    """FLOPs of one call of each workload (latency: per single-query call, on average; ``"corpus LABEL"``:
    one corpus length bucket's call)."""
    q = texts.query_tokens[: cfg.latency_calls]
    return {"latency": machine.encoder_flops(config, q) / len(q),
            "batch32x128": machine.encoder_flops(config, texts.batch_tokens),
            "corpus": machine.encoder_flops(config, texts.corpus_tokens),
            **{f"corpus {label}": machine.encoder_flops(config, tokens)
               for label, (_, tokens) in workloads.corpus_buckets(texts, CORPUS_BUCKETS).items()}}


def estimate_s(cfg: BenchConfig, names: list[str], flops: dict[str, float], rate: dict[str, float],
               latency_s: dict[str, float] | None = None) -> float:
    """Seconds the measured rounds, the memory phase and accuracy should take (rates in FLOP/s)."""
    per_round = mem = 0.0
    for n in names:
        lat = (latency_s or {}).get(n) or max(flops["latency"] / rate[n], 0.002)
        corpus = flops["corpus"] * ("corpus" in cfg.workloads) * (2 if cfg.buckets else 1)  # the buckets: the corpus again
        heavy = (flops["batch32x128"] * ("batch32x128" in cfg.workloads) + corpus) / rate[n]
        turns = -(-cfg.latency_calls // (LATENCY_BLOCK - LATENCY_WARM_CALLS)) * ("latency" in cfg.workloads)
        # The corpus in turns (and its buckets): a pause before each of a system's batch groups.
        pieces = ("corpus" in cfg.workloads) * (-(-cfg.corpus_size // BATCH) + cfg.buckets * (
            -(-cfg.corpus_size // BATCH) + len(CORPUS_BUCKETS)))
        per_round += (lat * LATENCY_BLOCK + LATENCY_BLOCK_PAUSE_S) * turns + heavy + PAUSE_S * (1 + pieces)
        if is_bowrt(n) and "concurrent" in cfg.workloads:
            per_round += len(CLIENTS) * len(MODES) * (cfg.concurrent_s + 0.1)
        # A fresh interpreter: torch and transformers take ~10 s to import on a small machine.
        if cfg.quick and not is_bowrt(n) and n != "torch":
            continue  # --quick: cold start for torch and bowrt only
        mem_flops = 0 if cfg.quick else flops["batch32x128"] + flops["corpus"] * min(1.0, 256 / cfg.corpus_size)
        mem += (2.0 if is_bowrt(n) else 10.0) + mem_flops / rate[n]
    return per_round * cfg.n_rounds + mem * cfg.memory + (30.0 if cfg.quick else 120.0) * cfg.accuracy


def fit_quick(cfg: BenchConfig, names: list[str], texts: workloads.Texts, config: dict[str, Any],
              rate: dict[str, float], log: Log, notes: list[str]) -> tuple[list[str], BenchConfig, workloads.Texts]:
    """Drop peers (:data:`QUICK_DROP_ORDER`), then shrink the corpus, until the quick run fits its budget; say which."""
    flops = workload_flops(config, texts, cfg)
    dropped = []
    for victim in QUICK_DROP_ORDER:
        if estimate_s(cfg, names, flops, rate) <= QUICK_BUDGET_S:
            break
        if victim in names:
            names = [n for n in names if n != victim]
            dropped.append(victim)
    if dropped:
        notes.append(f"--quick: left out {', '.join(dropped)} to stay under ~3 minutes (run without --quick for all)")
        log(notes[-1])
    n = full = cfg.corpus_size
    while n > QUICK_MIN_CORPUS and estimate_s(cfg, names, flops, rate) > QUICK_BUDGET_S:
        n = max(QUICK_MIN_CORPUS, n // 2)
        cfg = replace(cfg, corpus=n)
        texts = replace(texts, corpus=texts.corpus[:n], corpus_tokens=texts.corpus_tokens[:n])
        flops = workload_flops(config, texts, cfg)
    if n < full:
        notes.append(f"--quick: corpus cut to {n} passages for this model size")
        log(notes[-1])
    return names, cfg, texts
