"""Per node: its activation mode ("token" or "static") and SmoothQuant α, chosen by the
error each choice simulates (numpy) on the calibration rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from bowrt.export.int8.calibrate import GELU_MIN, CalibrationStats, Target, find_targets

DEFAULT_ALPHA = 0.5
ALPHA_GRID = (0.4, 0.5, 0.6, 0.7)
# Activation scales: "token" (one per row, from the row) or "static" (one per node, from the
# calibration texts' range; no range pass and no per-row output scaling at run time).
MODES_ACT = ("token", "static")
# A static node's bound is the calibration max times this; beyond it values saturate.
STATIC_MARGIN = 1.0
# A node goes static when its simulated error is at most this many times the per-token one.
STATIC_TOLERANCE = 1.0
# Smoothing costs one elementwise pass per MatMul; a node is left unsmoothed when that
# simulates at least as well as its best α (models without outlier channels). A factor
# above 1 would trade accuracy for that pass: 1.03 cost 0.007 overlap@10 on MiniLM/CLS.
NO_SMOOTHING_TOLERANCE = 1.0


def static_amax(amax: np.ndarray, s: np.ndarray) -> float:
    """The one activation bound of a static node: the calibration texts' largest |x_j / s_j|."""
    return float(max(np.max(amax / s), 1e-8)) * STATIC_MARGIN


def quantization_error(
    x: np.ndarray, w: np.ndarray, s: np.ndarray, *, unsigned: bool, mode: str = "token", amax: np.ndarray | None = None,
) -> float:
    """Relative error of the int8 rewrite of ``x @ w`` on sample rows ``x`` (numpy simulation).
    ``mode`` "static" quantizes ``x / s`` with the one scale that ``amax`` (the calibration
    per-channel max |x|) gives; "token" with one scale per row, from the row."""
    ref = x @ w
    ws = w * s[:, None]
    w_scale = np.maximum(np.abs(ws).max(0), 1e-12) / 127
    wq = np.clip(np.round(ws / w_scale), -127, 127) * w_scale
    if mode == "static":
        a = static_amax(amax if amax is not None else np.abs(x).max(0), s) / 127
        y = (np.clip(np.round(x / s / a), -128, 127) * a) @ wq
    elif unsigned:
        xs = (x + GELU_MIN) / s
        a = np.maximum(xs.max(1, keepdims=True), 1e-8) / 255
        xq = np.clip(np.round(xs / a), 0, 255) * a
        y = xq @ wq - GELU_MIN * w.sum(0)
    else:
        xs = x / s
        a = np.maximum(np.abs(xs).max(1, keepdims=True), 1e-8) / 127
        y = (np.round(xs / a) * a) @ wq
    return float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))


def smoothing_factors(
    targets: list[Target], weights: dict[str, np.ndarray], amax: dict[str, np.ndarray],
    alpha: float | None | dict[str, float | None],
) -> dict[str, np.ndarray]:
    """s_j = amax_j^α / wmax_j^(1-α) per input channel j of each target (α per target or
    shared); α None means no smoothing (s = 1, and no operator at run time)."""
    out = {}
    for t in targets:
        a = alpha[t.name] if isinstance(alpha, dict) else alpha
        if a is None:
            out[t.name] = np.ones(weights[t.weight].shape[0], np.float32)
            continue
        w = np.abs(weights[t.weight]).max(1)
        x = amax[t.x] + (GELU_MIN if t.role == "ffn_out" else 0.0)
        s = np.power(np.maximum(x, 1e-5), a) / np.power(np.maximum(w, 1e-5), 1 - a)
        out[t.name] = np.clip(s, 1e-4, 1e4).astype(np.float32)
    return out


def _errors(model: Any, stats: CalibrationStats, grid: tuple[float, ...]) -> dict[str, dict[tuple[str, float | None], float]]:
    """Simulated error of every target for every (mode, α) on the calibration rows."""
    from onnx import numpy_helper

    targets = find_targets(model)
    weights = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
    out: dict[str, dict[tuple[str, float | None], float]] = {t.name: {} for t in targets}
    for a in (None, *grid):
        smooth = smoothing_factors(targets, weights, stats.amax, a)
        for t in targets:
            for mode in MODES_ACT:
                out[t.name][(mode, a)] = quantization_error(
                    stats.samples[t.x], weights[t.weight], smooth[t.name],
                    unsigned=t.role == "ffn_out", mode=mode, amax=stats.amax[t.x])
    return out


def _best_alpha(errs: dict[tuple[str, float | None], float], mode: str, grid: tuple[float, ...]) -> tuple[float | None, float]:
    """The least-error α for ``mode``; None (no smoothing) when that simulates no worse."""
    a, err = min(((a, errs[(mode, a)]) for a in grid), key=lambda p: p[1])
    plain = errs[(mode, None)]
    return (None, plain) if plain <= NO_SMOOTHING_TOLERANCE * err else (a, err)


def choose_alphas(model: Any, stats: CalibrationStats, grid: tuple[float, ...] = ALPHA_GRID) -> dict[str, float | None]:
    """Per target, the α with the least simulated error on the calibration rows, all in
    per-token mode (None: no smoothing)."""
    return {name: _best_alpha(e, "token", grid)[0] for name, e in _errors(model, stats, grid).items()}


def choose_plan(
    model: Any, stats: CalibrationStats, grid: tuple[float, ...] = ALPHA_GRID, tolerance: float = STATIC_TOLERANCE,
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Per target, its activation mode and α: "static" (one calibrated scale, the fastest
    form) where its simulated error is within ``tolerance`` × the per-token error, else
    "token"."""
    alphas, modes = {}, {}
    for name, e in _errors(model, stats, grid).items():
        a_tok, err_tok = _best_alpha(e, "token", grid)
        a_st, err_st = _best_alpha(e, "static", grid)
        modes[name] = "static" if err_st <= tolerance * err_tok else "token"
        alphas[name] = a_st if modes[name] == "static" else a_tok
    return alphas, modes
