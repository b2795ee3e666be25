"""int8 weights: rounded to nearest, or by GPTQ on the calibration inputs' X^T X."""

from __future__ import annotations

import numpy as np

ROUNDINGS = ("gptq", "nearest")
GPTQ_DAMP = 0.01
GPTQ_BLOCK = 128


def round_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (column of ``w`` [K, N]), rounded to nearest."""
    w_scale = (np.maximum(np.abs(w).max(0), 1e-12) / 127).astype(np.float32)
    return np.clip(np.round(w / w_scale), -127, 127).astype(np.int8), w_scale


def gptq_weights(w: np.ndarray, h: np.ndarray, *, damp: float = GPTQ_DAMP, block: int = GPTQ_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights for ``x @ w`` (``w`` [K, N], same scales as :func:`round_weights`) by
    GPTQ (Frantar et al. 2023): input rows are rounded one at a time, in order of
    decreasing ``diag(h)``, and each row's rounding error is pushed onto the rows not
    yet rounded, weighted by the inverse of ``h = X^T X`` of calibration inputs, so the
    error of ``X @ w`` (not of ``w``) is what gets minimized."""
    k, _ = w.shape
    _, w_scale = round_weights(w)
    scale = w_scale.astype(np.float64)
    w = w.astype(np.float64).copy()
    h = np.array(h, dtype=np.float64, copy=True)
    dead = np.diag(h) <= 0  # channels never active in calibration: no information
    h[dead, dead] = 1.0
    w[dead] = 0.0
    order = np.argsort(-np.diag(h), kind="stable")
    w, h = w[order], h[order][:, order]
    h[np.diag_indices(k)] += damp * float(np.mean(np.diag(h)))
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of h^-1
    q = np.empty_like(w)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        wb = w[i1:i2].copy()
        err = np.empty_like(wb)
        ub = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            q[i1 + i] = np.clip(np.round(wb[i] / scale), -127, 127)
            err[i] = (wb[i] - q[i1 + i] * scale) / ub[i, i]
            wb[i + 1 :] -= np.outer(ub[i, i + 1 :], err[i])
        w[i2:] -= u[i1:i2, i2:].T @ err
    return q[np.argsort(order)].astype(np.int8), w_scale
