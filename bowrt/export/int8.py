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
(:func:`_attention`).
Nodes whose quantization hurts the output most can be kept in fp32 (``keep_fp32``),
chosen by measured end-to-end sensitivity in the pipeline and recorded in the manifest.

``dynamic`` is ONNX Runtime's standard dynamic quantization (per-channel weights,
per-tensor activations): what sentence-transformers and optimum ship; kept as the
baseline the benchmarks compare against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("smoothquant", "dynamic")
GELU_MIN = 0.17  # -min GELU(x) = 0.16997..., rounded up
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")
DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class Target:
    """A node to quantize: a weight MatMul or a fused Attention (its QKV projection)."""

    name: str
    op: str  # "MatMul" | "Attention"
    role: str  # attention | attn_out | ffn_in | ffn_out
    x: str  # activation input
    weight: str  # initializer name, shape [K, N]


def find_targets(model: Any) -> list[Target]:
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    out = []
    for node in graph.node:
        if node.op_type == "Attention" and node.domain == "com.microsoft":
            out.append(Target(node.name, "Attention", "attention", node.input[0], node.input[1]))
        elif node.op_type == "MatMul" and node.input[1] in weights:
            src = producer.get(node.input[0])
            kind = src.op_type if src is not None else ""
            role = "ffn_out" if kind in GELU_OPS else "attn_out" if kind in ("Attention", "MultiHeadAttention") else "ffn_in"
            out.append(Target(node.name, "MatMul", role, node.input[0], node.input[1]))
    return out


@dataclass(frozen=True)
class CalibrationStats:
    """What the calibration texts say about every target's input (padding excluded)."""

    amax: dict[str, np.ndarray]  # per-channel max |x|
    samples: dict[str, np.ndarray]  # a random sample of token rows, for sensitivity estimates
    hessians: dict[str, np.ndarray]  # X^T X over all tokens (float32), for GPTQ
    tokens: int


def activation_stats(
    fused: Path, targets: list[Target], batches: list[tuple[np.ndarray, np.ndarray]], *, sample_rows: int = 512, seed: int = 0
) -> CalibrationStats:
    """Run the fused fp32 graph over the calibration batches and collect, for every
    target's input: per-channel max |x|, a sample of token rows, and X^T X."""
    import onnx
    from bowrt.runtime.session import ort_session

    model = onnx.load(str(fused))
    names = sorted({t.x for t in targets})
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort_session(model.SerializeToString())
    inputs = {i.name for i in sess.get_inputs()}
    amax: dict[str, np.ndarray] = {}
    hessians: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    # A uniform sample of token rows, drawn up front so that only the sample is kept.
    total = int(sum(int(mask.sum()) for _, mask in batches))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, size=min(sample_rows, total), replace=False))
    tokens = 0
    for ids, mask in batches:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        outs = sess.run(names, {k: v for k, v in feeds.items() if k in inputs})
        keep = mask.astype(bool)
        n = int(keep.sum())
        mine = pick[(pick >= tokens) & (pick < tokens + n)] - tokens
        tokens += n
        for name, value in zip(names, outs):
            x = value[keep]
            m = np.abs(x).max(0)
            amax[name] = np.maximum(amax[name], m) if name in amax else m
            h = x.T @ x
            hessians[name] = hessians[name] + h if name in hessians else h
            rows[name].append(x[mine])
    samples = {name: np.concatenate(parts) for name, parts in rows.items()}
    return CalibrationStats(amax, samples, hessians, tokens)


def static_amax(amax: np.ndarray, s: np.ndarray) -> float:
    """The one activation bound of a static node: the calibration texts' largest |x_j / s_j|."""
    return float(max(np.max(amax / s), 1e-8)) * STATIC_MARGIN


def quantization_error(
    x: np.ndarray, w: np.ndarray, s: np.ndarray, unsigned: bool, mode: str = "token", amax: np.ndarray | None = None,
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
                    stats.samples[t.x], weights[t.weight], smooth[t.name], t.role == "ffn_out", mode, stats.amax[t.x])
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


def round_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (column of ``w`` [K, N]), rounded to nearest."""
    w_scale = (np.maximum(np.abs(w).max(0), 1e-12) / 127).astype(np.float32)
    return np.clip(np.round(w / w_scale), -127, 127).astype(np.int8), w_scale


ROUNDINGS = ("gptq", "nearest")
GPTQ_DAMP = 0.01
GPTQ_BLOCK = 128


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


class _Builder:
    """Collects new nodes and initializers while the graph is rewritten.

    Small operators cost ~10 µs each at batch 1, so what depends only on the batch
    shape (the [B, S, 1] zero points) is built once per graph and shared by every
    quantized MatMul.
    """

    def __init__(self, ids_input: str, mask_input: str | None = None) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.ids = ids_input
        self.mask = mask_input
        self._shared: dict[Any, str] = {}

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        domain = "com.microsoft" if op == "MatMulIntegerToFloat" else ""
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def zero_points(self, zp: int) -> str:
        """A uint8 tensor [B, S, 1] of zero points, one per token row."""
        from onnx import numpy_helper

        if ("zp", zp) not in self._shared:
            if "rows" not in self._shared:
                batch_shape = self.node("Shape", [self.ids], "q8/shared/batch_shape")  # [B, S]
                self._shared["rows"] = self.node(
                    "Concat", [batch_shape, self.const("q8/shared/one", np.array([1], np.int64))], "q8/shared/rows", axis=0
                )
            self._shared[("zp", zp)] = self.node(
                "ConstantOfShape", [self._shared["rows"]], f"q8/shared/zp{zp}",
                value=numpy_helper.from_array(np.array([zp], np.uint8)),
            )
        return self._shared[("zp", zp)]

    def quantize_rows(self, p: str, x: str, k: int, unsigned: bool) -> tuple[str, str, int]:
        """``x`` ([B, S, K]) quantized to uint8 with one scale per token row, taken from the row
        itself: (quantized tensor, [B, S, 1] scales, zero point).

        QuantizeLinear quantizes in blocks of one whole row (opset 21 ``block_size``), so
        nothing is reshaped: at batch 1 every small operator costs several µs."""
        # Signed inputs: symmetric, zero point 128 (u8). Unsigned: 0..255, zero point 0.
        zp, levels = (0, 255) if unsigned else (128, 127)
        peak = x if unsigned else self.node("Abs", [x], f"{p}/abs")
        amax = self.node("ReduceMax", [peak, self.const(f"{p}/last_axis", np.array([-1], np.int64))], f"{p}/amax", keepdims=1)
        # An all-zero row gets scale 0: whatever integers QuantizeLinear makes of 0/0, the
        # GEMM's result is multiplied by that 0, so the row's output is 0, as it should be.
        scale = self.node("Mul", [amax, self.const(f"{p}/inv_levels", np.float32(1 / levels))], f"{p}/scale")
        q = self.node("QuantizeLinear", [x, scale, self.zero_points(zp)], f"{p}/q", axis=2, block_size=k)
        return q, scale, zp

    def quantize_static(self, p: str, x: str, smooth: np.ndarray | None, a: float) -> tuple[str, str, int]:
        """``x / smooth`` (per input channel; None: ``x`` arrives smoothed) quantized to uint8
        with one calibrated scale ``a``: (quantized tensor, scale, zero point).

        Per-tensor QuantizeLinear runs ONNX Runtime's vectorized kernel and the GEMM's float
        epilogue does all the scaling. (A per-axis QuantizeLinear would take the smoothing
        in its scales, but ONNX Runtime runs that form ~100x slower than Mul + per-tensor.)"""
        if smooth is not None:
            x = self.divide(p, x, smooth)
        scale = self.const(f"{p}/x_scale", np.float32(a))
        # (q - 128) * a = x_j / smooth_j: the smoothed input the (row-scaled) weights expect.
        return self.node("QuantizeLinear", [x, scale, self.const(f"{p}/x_zp", np.uint8(128))], f"{p}/q"), scale, 128

    def int8_matmul(self, p: str, q: tuple[str, str, int], w_q: np.ndarray, w_scale: np.ndarray, out: str) -> str:
        """``out = (q - zp) * scale @ (w_q * w_scale)``: int8 weights with one scale per output
        channel, u8 x s8 (the AVX-512 VNNI form), GEMM and float epilogue in one kernel. Row
        scales ([B, S, 1]) ride in as the A scale, broadcast by the kernel. (A separate Mul
        after the GEMM measured no faster on the corpus and slower at batch 1.)"""
        x_q, scale, zp = q
        return self.node(
            "MatMulIntegerToFloat",
            [x_q, self.const(f"{p}/w_q", w_q), scale, self.const(f"{p}/w_scale", w_scale), self.const(f"{p}/a_zp", np.uint8(zp))],
            out,
        )

    def per_token_matmul(self, p: str, x: str, w_q: np.ndarray, w_scale: np.ndarray, unsigned: bool, out: str) -> str:
        """Nodes for ``out = x @ (w_q * w_scale)``, activations ([B, S, K]) quantized with one
        scale per token row: 5-7 operators per MatMul (instead of 9-11 with reshapes)."""
        return self.int8_matmul(p, self.quantize_rows(p, x, w_q.shape[0], unsigned), w_q, w_scale, out)

    def divide(self, p: str, x: str, s: np.ndarray) -> str:
        """``x / s`` per input channel (SmoothQuant), or ``x`` itself when s is all ones."""
        if np.all(s == 1):
            return x
        return self.node("Mul", [x, self.const(f"{p}/inv_smooth", (1 / s).astype(np.float32))], f"{p}/x_smooth")

    def static_matmul(self, p: str, x: str, w_q: np.ndarray, w_scale: np.ndarray, smooth: np.ndarray | None, a: float, out: str) -> str:
        """Nodes for ``out = x @ (w_q * w_scale)`` with activations quantized by one calibrated
        scale ``a`` for ``x / smooth`` (:meth:`quantize_static`)."""
        return self.int8_matmul(p, self.quantize_static(p, x, smooth, a), w_q, w_scale, out)

    def key_mask(self) -> str:
        """A bool [B, 1, S, S] tensor, True where a query may attend to a key (the key is not
        padding): the ``attn_mask`` form ONNX Attention takes. Built once per graph."""
        if "mask4" not in self._shared:
            if self.mask is None:
                raise ValueError("the graph has no attention_mask input to build the attention mask from")
            from onnx import TensorProto

            keys = self.node("Cast", [self.mask], "q8/shared/mask_bool", to=TensorProto.BOOL)
            keys = self.node("Unsqueeze", [keys, self.const("q8/shared/axes12", np.array([1, 2], np.int64))], "q8/shared/mask_b11s")
            shape = self.node("Shape", [self.mask], "q8/shared/mask_shape")  # [B, S]
            rows = self.node("Concat", [
                self.node("Slice", [shape, self.const("q8/shared/at0", np.array([0], np.int64)),
                                    self.const("q8/shared/at1", np.array([1], np.int64))], "q8/shared/mask_b"),
                self.const("q8/shared/dim1", np.array([1], np.int64)),
                self.node("Slice", [shape, "q8/shared/at1", self.const("q8/shared/at2", np.array([2], np.int64))], "q8/shared/mask_s"),
                "q8/shared/dim1",
            ], "q8/shared/mask_rows", axis=0)  # [B, 1, S, 1]
            self._shared["mask4"] = self.node("Expand", [keys, rows], "q8/shared/mask4")
        return self._shared["mask4"]


def quantize_smooth(
    fused: Path,
    dst: Path,
    stats: CalibrationStats,
    *,
    alpha: float | None | dict[str, float | None] = DEFAULT_ALPHA,
    keep_fp32: frozenset[str] = frozenset(),
    modes: str | dict[str, str] = "token",
    rounding: str = "gptq",
    cache: dict[Any, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Rewrite ``fused`` into the smoothquant int8 graph at ``dst``.

    ``rounding`` "gptq" rounds the weights by GPTQ on the calibration inputs' X^T X
    (:func:`gptq_weights`), "nearest" to nearest. ``cache`` (a dict the caller keeps)
    saves the rounded weights between calls that differ only in ``keep_fp32``. ``modes``
    gives each node's activation scales, "token" or "static" (one for all, or per node)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    cache = {} if cache is None else cache
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fused))
    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in graph.initializer}
    targets = {t.name: t for t in find_targets(model)}
    smooth = smoothing_factors(list(targets.values()), weights, stats.amax, alpha)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    # The attention output projection's smoothing is folded into the V columns of the
    # QKV projection (attention is linear in V), so it costs no operator at run time.
    output_of = {node.name: node.output[0] for node in graph.node}
    v_fold: dict[str, np.ndarray] = {}  # Attention node -> the 1/s to apply to its V columns
    folded_into_v: set[str] = set()  # attn_out MatMuls whose input arrives already smoothed
    for t in targets.values():
        nxt = consumers.get(output_of[t.name], [])
        if t.op == "Attention" and len(nxt) == 1 and nxt[0].name in targets and nxt[0].name not in keep_fp32:
            v_fold[t.name] = smooth[nxt[0].name]
            folded_into_v.add(nxt[0].name)

    mask_input = next((i.name for i in graph.input if i.name == "attention_mask"), None)
    b = _Builder(graph.input[0].name, mask_input)
    for node in graph.node:
        t = targets.get(node.name)
        if t is None:
            b.nodes.append(node)
            continue
        p = f"q8/{node.name.strip('/')}"
        w = weights[t.weight]
        qkv_bias = weights[node.input[2]] if t.op == "Attention" else None
        if t.op == "Attention" and t.name in v_fold:
            hidden = w.shape[1] // 3
            inv = np.concatenate([np.ones(2 * hidden, np.float32), 1 / v_fold[t.name]])
            w = w * inv[None, :]
            qkv_bias = qkv_bias * inv
        if t.name in keep_fp32:
            if t.op == "Attention" and t.name in v_fold:
                node.input[1] = b.const(f"{p}/qkv_weight_fp32", w.astype(np.float32))
                node.input[2] = b.const(f"{p}/qkv_bias", qkv_bias.astype(np.float32))
            b.nodes.append(node)
            continue
        s = smooth[t.name]
        w = w * s[:, None]
        key = (t.name, rounding, hashlib.sha1(w.tobytes()).hexdigest())
        if key not in cache and rounding == "nearest":
            cache[key] = round_weights(w)
        elif key not in cache:  # the GEMM's input is x / s: its X^T X is the calibration one over s s^T
            cache[key] = gptq_weights(w, stats.hessians[t.x] / np.outer(s, s).astype(np.float64))
        w_q, w_scale = cache[key]
        mode = modes.get(t.name, "token") if isinstance(modes, dict) else modes
        if mode not in MODES_ACT:
            raise ValueError(f"{t.name}: unknown activation mode {mode!r}; valid: {', '.join(MODES_ACT)}")
        if mode == "static":
            # The calibration range of x / s (an input folded into V arrives divided by s).
            a = static_amax(stats.amax[t.x], s) / 127
            q = b.quantize_static(p, t.x, None if t.name in folded_into_v else s, a)
        else:
            x, unsigned = _token_input(b, p, t, t.x, s, smooth_op=t.name not in folded_into_v)
            if unsigned:
                _fold_gelu_shift(b, p, node, consumers, weights, w_q, w_scale, s)
            q = b.quantize_rows(p, x, w_q.shape[0], unsigned)
        if t.op == "MatMul":
            b.int8_matmul(p, q, w_q, w_scale, node.output[0])
        else:
            _attention(b, p, node, q, w_q, w_scale, qkv_bias)
    # Drop the fp32 weights that no node reads any more.
    used = {i for n in b.nodes for i in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(_topological(b.nodes, {i.name for i in graph.input} | {i.name for i in kept_inits + b.inits}))
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + [i for i in b.inits if i.name in used])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _to_opset(model, QUANTIZE_OPSET)
    onnx.save(model, str(dst))
    return {
        "method": "smoothquant",
        "weights": "int8 per-channel symmetric" + (", GPTQ-rounded on the calibration texts" if rounding == "gptq" else ""),
        "activations": "uint8, per node either per-token (one scale per row, from the row itself) or static "
                       "(one scale from the calibration texts): batch-invariant either way",
        "activation_modes": ({k: modes[k] for k in sorted(modes)} if isinstance(modes, dict) else modes),
        # null: that node is not smoothed (no outlier channels worth an extra pass)
        "smoothquant_alpha": {k: alpha[k] for k in sorted(alpha)} if isinstance(alpha, dict) else alpha,
        "post_gelu": f"per-token nodes: unsigned, shifted by {GELU_MIN}",
        "quantized_nodes": len(targets) - len(keep_fp32),
        "fp32_nodes": sorted(keep_fp32),
    }


def _attention(b: _Builder, p: str, node: Any, q: tuple[str, str, int], w_q: np.ndarray, w_scale: np.ndarray, qkv_bias: np.ndarray) -> None:
    """The fused Attention's replacement: the int8 QKV projection, ``Split``, then ONNX
    ``Attention`` (opset 23) on 3-D Q, K, V with a bool key mask.

    ONNX Runtime's CPU kernel for ONNX Attention ran 20% faster (kernel time, twin
    corpus) than ``MultiHeadAttention`` with a bias and a padding mask, which adds the
    bias in a separate pass while transposing. (Three GEMMs, one each for Q, K and V,
    would need no ``Split``, but cost more than the copy they save.) ONNX Attention takes
    no bias:
    - Q and V: one Add each;
    - K: dropped. q.(k + b_k) = q.k + q.b_k adds the same number to every score in a
      query's row, and softmax does not change under that (exact in real arithmetic).
    (Folding b_v through the softmax into the output projection's bias would save the V
    Add, but it changes what that projection quantizes; on MiniLM it measured no closer.)"""
    from onnx import helper

    attrs = {a.name: a for a in node.attribute}
    if "unidirectional" in attrs and attrs["unidirectional"].i:
        raise ValueError(f"{node.name}: unidirectional attention is not supported")
    if "qkv_hidden_sizes" in attrs or any(node.input[4:]):
        raise ValueError(f"{node.name}: only plain self-attention (no qkv_hidden_sizes, past or attention bias) is supported")
    heads = attrs["num_heads"].i
    extra = {"scale": attrs["scale"].f} if "scale" in attrs and attrs["scale"].f else {}
    hidden = w_q.shape[1] // 3
    qkv = b.int8_matmul(p, q, w_q, w_scale, f"{p}/qkv")
    query, key, value = f"{p}/query", f"{p}/key", f"{p}/value"
    b.nodes.append(helper.make_node(
        "Split", [qkv, b.const(f"{p}/qkv_sizes", np.array([hidden] * 3, np.int64))], [query, key, value], name=f"{p}/split", axis=-1,
    ))
    query = b.node("Add", [query, b.const(f"{p}/query_bias", qkv_bias[:hidden].astype(np.float32))], f"{p}/query_biased")
    value = b.node("Add", [value, b.const(f"{p}/value_bias", qkv_bias[2 * hidden:].astype(np.float32))], f"{p}/value_biased")
    b.node("Attention", [query, key, value, b.key_mask()], node.output[0], q_num_heads=heads, kv_num_heads=heads, **extra)


def _token_input(b: _Builder, p: str, t: Target, x: str, s: np.ndarray, smooth_op: bool) -> tuple[str, bool]:
    """The per-token path's input: post-GELU inputs shifted to be >= 0, then divided by the
    smoothing factors (unless they were folded upstream)."""
    unsigned = t.role == "ffn_out"
    if unsigned:
        x = b.node("Add", [x, b.const(f"{p}/shift", np.float32(GELU_MIN))], f"{p}/x_shifted")
    return (b.divide(p, x, s) if smooth_op else x), unsigned


def _fold_gelu_shift(
    b: _Builder, p: str, node: Any, consumers: dict[str, list[Any]], weights: dict[str, np.ndarray],
    w_q: np.ndarray, w_scale: np.ndarray, s: np.ndarray,
) -> None:
    """(x + c) @ W = x @ W + c * colsum(W): take the shift back out through the next bias."""
    nxt = consumers[node.output[0]]
    if len(nxt) != 1 or nxt[0].op_type != "SkipLayerNormalization" or len(nxt[0].input) < 5:
        raise ValueError(f"{node.name}: expected one SkipLayerNormalization with a bias after the FFN output")
    # A new initializer per node: the exporter shares identical ones (e.g. the all-zero
    # biases of a freshly initialized model) between layers. The column sums of the
    # *quantized* weights, so the shift cancels exactly and leaves no constant per-channel
    # offset in every token's output.
    w_x = (w_q.astype(np.float64) * w_scale) / s[:, None]
    bias = weights[nxt[0].input[4]] - GELU_MIN * w_x.sum(0)
    nxt[0].input[4] = b.const(f"{p}/next_bias", bias.astype(np.float32))


# QuantizeLinear with ``block_size`` (one scale per token row of a 3-D tensor) is opset 21
# (ONNX Runtime's CPU kernel has it since 1.19); the ONNX Attention operator is opset 23
# (CPU kernel since ONNX Runtime 1.23).
QUANTIZE_OPSET = 23
_REDUCE_OPS = ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")  # axes became an input in opset 18


def _to_opset(model: Any, version: int) -> None:
    """Raise the default-domain opset of an opset >= 13 graph to ``version`` (<= 23): of the
    operators the exported graphs use, only the reductions that take axes changed form on
    the way (opsets 22-23 widened type support only)."""
    from onnx import numpy_helper

    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if opset.version < 13:
                raise ValueError(f"graph opset {opset.version} is too old to raise to {version}")
            opset.version = max(opset.version, version)
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in _REDUCE_OPS:
            axes = next((a for a in node.attribute if a.name == "axes"), None)
            if axes is not None:
                name = f"{node.name or node.output[0]}/axes"
                model.graph.initializer.append(numpy_helper.from_array(np.array(list(axes.ints), np.int64), name))
                node.attribute.remove(axes)
                node.input.append(name)


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """Order nodes so each comes after its inputs' producers (shared nodes are created lazily)."""
    ready = set(available) | {""}
    pending, out = list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near {rest[0].name!r}")
        pending = rest
    return out


def quantize_dynamic_int8(src: Path, dst: Path) -> dict[str, Any]:
    """ONNX Runtime's standard dynamic int8 (the baseline)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        # Needed on fused graphs: the contrib operators carry no type info the
        # quantizer can infer, and without a default it refuses to run.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return {
        "method": "dynamic",
        "weights": "int8 per-channel symmetric",
        "activations": "uint8 per-tensor, computed at run time over the whole batch (not batch-invariant)",
    }
