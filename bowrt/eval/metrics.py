"""Retrieval metrics per query, their means, and how two bundles' rankings differ.

Per query, from the ranked passage rows:

- **BEIR** (as ``pytrec_eval``, which BEIR uses, computes them): Recall@k = relevant passages
  (score > 0) in the top k over all relevant ones; MRR@10 = 1 / rank of the first relevant
  passage in the top 10, else 0; nDCG@10 with the judgement scores as gains,
  ``sum(gain_i / log2(i + 1))`` over the top 10 against the same sum over the ideal order.
- **DPR** (as its paper reports retrieval): top-k accuracy = 1 when any of the top k
  passages contains an answer (:mod:`bowrt.eval.answers`), else 0.

Every metric's figure is the mean over the evaluated queries. Between two bundles: the
mean overlap of their top k, a paired bootstrap 95 % interval of each metric's mean
difference (queries resampled with replacement, both bundles on the same resample), and
the queries whose hits in the top k changed.
"""

from __future__ import annotations

import numpy as np

RECALL_KS = (1, 5, 20, 100)
DPR_KS = (5, 20, 100)
CUTOFF = 10  # MRR@10 and nDCG@10
BOOTSTRAP = 1000
SEED = 0


def beir_per_query(rows: np.ndarray, relevant: list[dict[int, int]], ks: tuple[int, ...] = RECALL_KS) -> dict[str, np.ndarray]:
    """``rows[q]``: query q's ranked passage rows; ``relevant[q]``: {row: score} of its judgements."""
    out = {f"recall@{k}": np.zeros(len(rows)) for k in ks}
    out["mrr@10"], out["ndcg@10"] = np.zeros(len(rows)), np.zeros(len(rows))
    discount = 1.0 / np.log2(np.arange(2, CUTOFF + 2))
    for q, (ranked, judged) in enumerate(zip(rows, relevant)):
        rel = {r for r, s in judged.items() if s > 0}
        hits = np.array([r in rel for r in ranked], dtype=bool)
        for k in ks:
            out[f"recall@{k}"][q] = hits[:k].sum() / len(rel)
        first = np.flatnonzero(hits[:CUTOFF])
        out["mrr@10"][q] = 1.0 / (first[0] + 1) if len(first) else 0.0
        gains = np.array([max(judged.get(r, 0), 0) for r in ranked[:CUTOFF]], dtype=np.float64)
        ideal = np.sort(np.array([max(s, 0) for s in judged.values()], dtype=np.float64))[::-1][:CUTOFF]
        idcg = float((ideal * discount[: len(ideal)]).sum())
        out["ndcg@10"][q] = float((gains * discount[: len(gains)]).sum()) / idcg if idcg > 0 else 0.0
    return out


def dpr_per_query(hits: np.ndarray, ks: tuple[int, ...] = DPR_KS) -> dict[str, np.ndarray]:
    """``hits[q, i]``: passage i of query q's ranking contains an answer."""
    first = np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int64).max)
    return {f"top{k}": (first < k).astype(np.float64) for k in ks}


def means(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(v.mean()) if len(v) else 0.0 for name, v in per_query.items()}


def overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean over queries of |top k of a ∩ top k of b| / k."""
    if not len(a):
        return 1.0
    return float(np.mean([len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b)]))


def bootstrap_diff(base: np.ndarray, other: np.ndarray, rounds: int = BOOTSTRAP, seed: int = SEED) -> dict[str, float]:
    """Mean of ``other - base`` per query and its paired bootstrap 95 % interval."""
    d = np.asarray(other, np.float64) - np.asarray(base, np.float64)
    rng = np.random.default_rng(seed)
    samples = np.empty(rounds)
    step = max(1, (1 << 22) // max(len(d), 1))  # resamples at a time: bounded memory for big query sets
    for s in range(0, rounds, step):
        n = min(step, rounds - s)
        samples[s:s + n] = d[rng.integers(0, len(d), size=(n, len(d)))].mean(1)
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return {"diff": float(d.mean()), "low": float(lo), "high": float(hi)}


def changed(base: np.ndarray, other: np.ndarray, query_ids: list[str]) -> dict[str, list[str]]:
    """The queries whose hit at one cutoff (a 0/1 or fractional per-query metric) went down, or up."""
    return {"lost": [q for q, a, b in zip(query_ids, base, other) if b < a],
            "gained": [q for q, a, b in zip(query_ids, base, other) if b > a]}
