"""Parity of an exported variant against PyTorch: numbers, ranking agreement, gates.

Cosine alone hides what a retriever cares about, so every report also has the
mean overlap@10 of dot-product rankings (probe queries against probe passages)
and batch invariance (each text alone vs inside a padded batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bowrt.errors import OptionError

# Default gates per variant: {metric: (bound, "min" | "max")}. "min" means the
# metric must be at least the bound.
DEFAULT_GATES: dict[str, dict[str, float]] = {
    "fp32": {"min_cosine": 0.99999, "max_abs_diff_rel": 1e-4},
    "fp16": {"min_cosine": 0.999},
    "int8": {"min_cosine": 0.99, "overlap_at_10": 0.95},
}
# What the int8 search aims for on the calibration texts before it stops keeping
# more nodes in fp32. Stricter than the probe gate on purpose: the calibration set has
# 64 passages against the probes' 96, so its overlap@10 runs higher (0.006-0.02 above
# the probes' in every int8 configuration measured on MiniLM).
INT8_SEARCH_TARGET = {"min_cosine": 0.995, "overlap_at_10": 0.98}
INT8_MAX_FP32_FRACTION = 0.125
UPPER_BOUNDED = {"max_abs_diff_rel", "max_abs_diff"}
METRICS = ("min_cosine", "mean_cosine", "max_abs_diff", "max_abs_diff_rel", "overlap_at_10", "batch_invariance_min_cosine")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-30)


def overlap_at_k(ref_q: np.ndarray, ref_p: np.ndarray, q: np.ndarray, p: np.ndarray, k: int = 10) -> float:
    """Mean |top-k(ref) ∩ top-k(candidate)| / k over queries, ranking passages by dot product."""
    k = min(k, ref_p.shape[0])
    if k == 0 or ref_q.shape[0] == 0:
        return 1.0
    top_ref = np.argsort(-(ref_q @ ref_p.T), axis=1, kind="stable")[:, :k]
    top = np.argsort(-(q @ p.T), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top)]))


def compare(ref_q: np.ndarray, ref_p: np.ndarray, q: np.ndarray, p: np.ndarray) -> dict[str, float]:
    ref = np.concatenate([ref_q, ref_p])
    got = np.concatenate([q, p])
    cos = cosines(ref, got)
    max_abs = float(np.abs(ref - got).max())
    return {
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": max_abs,
        "max_abs_diff_rel": max_abs / max(float(np.abs(ref).max()), 1e-30),
        "overlap_at_10": overlap_at_k(ref_q, ref_p, q, p, 10),
    }


def parse_gates(specs: list[str] | None) -> dict[str, dict[str, float]]:
    """Parse ``VARIANT.METRIC=VALUE`` overrides on top of the defaults."""
    gates = {v: dict(g) for v, g in DEFAULT_GATES.items()}
    for spec in specs or []:
        try:
            key, value = spec.split("=", 1)
            variant, metric = key.split(".", 1)
            bound = float(value)
        except ValueError as e:
            raise OptionError(f"gate {spec!r} is not VARIANT.METRIC=VALUE (e.g. int8.overlap_at_10=0.9)") from e
        if variant not in gates:
            raise OptionError(f"gate {spec!r}: unknown variant {variant!r}; valid: {', '.join(gates)}")
        if metric not in METRICS:
            raise OptionError(f"gate {spec!r}: unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        gates[variant][metric] = bound
    return gates


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: tuple[str, ...]


def check_gates(metrics: dict[str, Any], gates: dict[str, float]) -> GateResult:
    failures = []
    for metric, bound in gates.items():
        value = metrics.get(metric)
        if value is None:
            continue
        if metric in UPPER_BOUNDED:
            if value > bound:
                failures.append(f"{metric} = {value:.3g} > {bound:.3g}")
        elif value < bound:
            failures.append(f"{metric} = {value:.6f} < {bound}")
    return GateResult(not failures, tuple(failures))


def format_report(variant: str, metrics: dict[str, Any], gates: dict[str, float]) -> str:
    """One human-readable line per variant, for the export log and `make demo`."""
    parts = [
        f"min cos {metrics['min_cosine']:.6f}",
        f"mean cos {metrics['mean_cosine']:.6f}",
        f"max |diff| {metrics['max_abs_diff']:.2e} ({metrics['max_abs_diff_rel']:.1e} of max)",
        f"overlap@10 {metrics['overlap_at_10']:.3f}",
    ]
    if "batch_invariance_min_cosine" in metrics:
        parts.append(f"alone-vs-batch min cos {metrics['batch_invariance_min_cosine']:.6f}")
    verdict = check_gates(metrics, gates)
    status = "PASS" if verdict.passed else "FAIL: " + "; ".join(verdict.failures)
    return f"{variant:>5}: " + ", ".join(parts) + f"  [{status}]"
