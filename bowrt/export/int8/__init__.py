"""int8 variants for CPU.

``smoothquant`` (bowrt's int8, the default) rewrites every weight MatMul of the
fused fp32 graph, the attention QKV projection included, as

    x --(÷ s, SmoothQuant)--> per-token scale = max|x_row| / 127
      --> QuantizeLinear (uint8, one scale per token) --> MatMulIntegerToFloat (u8 x s8 per-channel)
      --> × per-token scale

Why each piece:
- *Per-token activation scales*: a row's scale comes from that row's own values,
  so a text's vector does not depend on which texts share its batch or on padding
  (ONNX Runtime's dynamic quantization uses one scale for the whole batch tensor,
  and the same passage alone vs in a batch of 32 drifts to cosine 0.99).
- *SmoothQuant* (Xiao et al. 2023): BERT's LayerNorm outputs carry a few channels
  with huge magnitudes; with one scale per token they would crush every other
  channel to a few levels. Dividing channel j by s_j = amax_j^α / wmax_j^(1-α)
  (amax from calibration texts) and multiplying row j of W by s_j is exact in
  real arithmetic and moves the outliers into the weights, which per-channel
  weight scales absorb.
- *Post-GELU inputs are unsigned*: GELU(x) ≥ -0.17, so x + 0.17 is quantized to
  the full 0..255 range (one more bit than symmetric) and -0.17·colsum(W) is
  folded into the next bias.
- *GPTQ rounding* (Frantar et al. 2023): weights are rounded one input channel at a
  time and each rounding error is pushed onto the channels not yet rounded, through
  the calibration inputs' X^T X, so the error of x @ W (not of W) is minimized. On
  MiniLM it cuts the error that int8 weights add by 2.2–2.6×.
- u8 × s8 is the operand form that AVX-512 VNNI runs fastest; the GEMM and its
  float epilogue are one ONNX Runtime kernel (MatMulIntegerToFloat).
- *Static nodes* (optional, per node): where one activation scale calibrated on the
  shipped texts simulates within ``STATIC_TOLERANCE`` x the per-token error, the node is
  Mul(1/s) -> QuantizeLinear (one scale) -> MatMulIntegerToFloat: no range reduction, and
  no per-row output scaling, which ONNX Runtime applies in a single-threaded pass after
  the GEMM (~15% of a 4096 x 768 x 3072 GEMM's time). Also exactly batch-invariant. The
  default tolerance 1.0 keeps every node of MiniLM and the twin per-token; above it
  trades agreement for speed (README, "int8 that a retriever can trust").
The fused Attention operator takes fp32 weights, so it becomes the int8 QKV projection and
``Split``, followed by ONNX's own ``Attention`` (opset 23); its bias is re-placed exactly
(``rewrite._attention``).
Nodes whose quantization hurts the output most can be kept in fp32 (``keep_fp32``),
chosen by measured end-to-end sensitivity in the search and recorded in the manifest.

``dynamic`` is ONNX Runtime's standard dynamic quantization (per-channel weights,
per-tensor activations): what sentence-transformers and optimum ship; kept as the
baseline the benchmarks compare against.

One module per step, in the order the export runs them:

- ``calibrate``: the nodes to quantize and their inputs' statistics on the calibration texts;
- ``choose``: per node, the activation mode and α the numpy simulation picks;
- ``gptq``: the int8 weights (GPTQ, or nearest);
- ``builder`` and ``rewrite``: the int8 graph's nodes, and the rewrite of the fused graph;
- ``search``: :class:`Int8Settings` and the search over per-node tiers on the calibration texts;
- ``isa``: which CPUs compute a graph's integers exactly, and the u8 x u8 twin;
- ``dynamic``: the baseline.
"""

from __future__ import annotations

from bowrt.export.int8.calibrate import GELU_MIN, CalibrationStats, Target, activation_stats, find_targets
from bowrt.export.int8.choose import (
    ALPHA_GRID,
    DEFAULT_ALPHA,
    MODES_ACT,
    STATIC_TOLERANCE,
    choose_alphas,
    choose_plan,
    quantization_error,
    smoothing_factors,
)
from bowrt.export.int8.dynamic import quantize_dynamic_int8
from bowrt.export.int8.gptq import ROUNDINGS, gptq_weights, round_weights
from bowrt.export.int8.rewrite import QUANTIZE_OPSET, quantize_smooth
from bowrt.export.int8.search import METHODS, PROFILES, CalibrationSet, Int8Settings, best_step, search_int8

__all__ = [
    "ALPHA_GRID", "DEFAULT_ALPHA", "GELU_MIN", "METHODS", "MODES_ACT", "PROFILES", "QUANTIZE_OPSET", "ROUNDINGS", "STATIC_TOLERANCE",
    "CalibrationSet", "CalibrationStats", "Int8Settings", "Target",
    "activation_stats", "best_step", "choose_alphas", "choose_plan", "find_targets", "gptq_weights",
    "quantization_error", "quantize_dynamic_int8", "quantize_smooth", "round_weights", "search_int8",
    "smoothing_factors",
]
