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
- u8 × s8 is the operand form that AVX-512 VNNI runs fastest; the GEMM and its
  float epilogue are one ONNX Runtime kernel (MatMulIntegerToFloat).
The fused Attention operator takes fp32 weights, so it is split into the int8
QKV MatMul followed by MultiHeadAttention with the same bias and mask.
Nodes that quantize worst can be kept in fp32 (``keep_fp32``), chosen by measured
sensitivity in the pipeline and recorded in the manifest.

``dynamic`` is ONNX Runtime's standard dynamic quantization (per-channel weights,
per-tensor activations): what sentence-transformers and optimum ship; kept as the
baseline the benchmarks compare against.
"""

from __future__ import annotations

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
        if node.op_type == "Attention":
            out.append(Target(node.name, "Attention", "attention", node.input[0], node.input[1]))
        elif node.op_type == "MatMul" and node.input[1] in weights:
            src = producer.get(node.input[0])
            kind = src.op_type if src is not None else ""
            role = "ffn_out" if kind in GELU_OPS else "attn_out" if kind in ("Attention", "MultiHeadAttention") else "ffn_in"
            out.append(Target(node.name, "MatMul", role, node.input[0], node.input[1]))
    return out


def activation_stats(
    fused: Path, targets: list[Target], batches: list[tuple[np.ndarray, np.ndarray]], *, sample_rows: int = 512, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-channel max |x| of every target's input over the calibration batches (padding
    excluded), plus a random sample of token rows of each input for sensitivity estimates."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fused))
    names = sorted({t.x for t in targets})
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    amax: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for ids, mask in batches:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        outs = sess.run(names, {k: v for k, v in feeds.items() if k in inputs})
        keep = mask.astype(bool)
        for name, value in zip(names, outs):
            tokens = value[keep]
            m = np.abs(tokens).max(0)
            amax[name] = np.maximum(amax[name], m) if name in amax else m
            rows[name].append(tokens)
    rng = np.random.default_rng(seed)
    samples = {}
    for name, parts in rows.items():
        all_rows = np.concatenate(parts)
        pick = rng.choice(len(all_rows), size=min(sample_rows, len(all_rows)), replace=False)
        samples[name] = all_rows[np.sort(pick)]
    return amax, samples


def quantization_error(x: np.ndarray, w: np.ndarray, s: np.ndarray, unsigned: bool) -> float:
    """Relative error of the int8 rewrite of ``x @ w`` on sample rows ``x`` (numpy simulation)."""
    ref = x @ w
    xs = ((x + GELU_MIN) if unsigned else x) / s
    ws = w * s[:, None]
    w_scale = np.maximum(np.abs(ws).max(0), 1e-12) / 127
    wq = np.clip(np.round(ws / w_scale), -127, 127) * w_scale
    if unsigned:
        a = np.maximum(xs.max(1, keepdims=True), 1e-8) / 255
        xq = np.clip(np.round(xs / a), 0, 255) * a
        y = xq @ wq - GELU_MIN * w.sum(0)
    else:
        a = np.maximum(np.abs(xs).max(1, keepdims=True), 1e-8) / 127
        y = (np.round(xs / a) * a) @ wq
    return float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))


def sensitivity_order(
    model: Any, amax: dict[str, np.ndarray], samples: dict[str, np.ndarray], alpha: float = DEFAULT_ALPHA
) -> list[tuple[str, float]]:
    """Targets sorted by simulated quantization error, worst first."""
    from onnx import numpy_helper

    targets = find_targets(model)
    weights = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
    smooth = smoothing_factors(targets, weights, amax, alpha)
    errs = [
        (t.name, quantization_error(samples[t.x], weights[t.weight], smooth[t.name], t.role == "ffn_out"))
        for t in targets
    ]
    return sorted(errs, key=lambda e: -e[1])


def smoothing_factors(targets: list[Target], weights: dict[str, np.ndarray], amax: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    out = {}
    for t in targets:
        w = np.abs(weights[t.weight]).max(1)
        x = amax[t.x] + (GELU_MIN if t.role == "ffn_out" else 0.0)
        s = np.power(np.maximum(x, 1e-5), alpha) / np.power(np.maximum(w, 1e-5), 1 - alpha)
        out[t.name] = np.clip(s, 1e-4, 1e4).astype(np.float32)
    return out


class _Builder:
    """Collects new nodes and initializers while the graph is rewritten."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        domain = "com.microsoft" if op in ("MatMulIntegerToFloat", "MultiHeadAttention") else ""
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def per_token_matmul(self, p: str, x: str, w: np.ndarray, unsigned: bool) -> str:
        """Nodes for ``x @ w`` with int8 weights per output channel and per-token activation scales."""
        from onnx import numpy_helper

        k = w.shape[0]
        w_scale = (np.maximum(np.abs(w).max(0), 1e-12) / 127).astype(np.float32)
        w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        # Signed inputs: symmetric, zero point 128 (u8). Unsigned: 0..255, zero point 0.
        zp, levels = (0, 255) if unsigned else (128, 127)
        peak = x if unsigned else self.node("Abs", [x], f"{p}/abs")
        amax = self.node("ReduceMax", [peak], f"{p}/amax", axes=[-1], keepdims=1)
        amax = self.node("Max", [amax, self.const(f"{p}/eps", np.float32(1e-8))], f"{p}/amax_eps")
        scale = self.node("Mul", [amax, self.const(f"{p}/inv_levels", np.float32(1 / levels))], f"{p}/scale")
        # QuantizeLinear takes one scale per index along one axis: flatten tokens to rows.
        scale_1d = self.node("Reshape", [scale, self.const(f"{p}/flat", np.array([-1], np.int64))], f"{p}/scale_1d")
        zp_1d = self.node(
            "ConstantOfShape", [self.node("Shape", [scale_1d], f"{p}/rows")], f"{p}/zp",
            value=numpy_helper.from_array(np.array([zp], np.uint8)),
        )
        x_2d = self.node("Reshape", [x, self.const(f"{p}/shape_2d", np.array([-1, k], np.int64))], f"{p}/x_2d")
        q_2d = self.node("QuantizeLinear", [x_2d, scale_1d, zp_1d], f"{p}/q_2d", axis=0)
        q = self.node("Reshape", [q_2d, self.node("Shape", [x], f"{p}/x_shape")], f"{p}/q")
        y = self.node(
            "MatMulIntegerToFloat",
            [q, self.const(f"{p}/w_q", w_q), self.const(f"{p}/one", np.float32(1.0)),
             self.const(f"{p}/w_scale", w_scale), self.const(f"{p}/a_zp", np.uint8(zp))],
            f"{p}/y_unscaled",
        )
        return self.node("Mul", [y, scale], f"{p}/y")


def quantize_smooth(
    fused: Path,
    dst: Path,
    amax: dict[str, np.ndarray],
    *,
    alpha: float = DEFAULT_ALPHA,
    keep_fp32: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Rewrite ``fused`` into the smoothquant per-token int8 graph at ``dst``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fused))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    weights = {name: numpy_helper.to_array(init).astype(np.float32) for name, init in inits.items()}
    targets = {t.name: t for t in find_targets(model)}
    smooth = smoothing_factors(list(targets.values()), weights, amax, alpha)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    b = _Builder()
    bias_delta: dict[str, np.ndarray] = {}
    for node in graph.node:
        t = targets.get(node.name)
        if t is None or t.name in keep_fp32:
            b.nodes.append(node)
            continue
        p = f"q8/{node.name.strip('/')}"
        w = weights[t.weight] * smooth[t.name][:, None]
        x = t.x
        unsigned = t.role == "ffn_out"
        if unsigned:
            x = b.node("Add", [x, b.const(f"{p}/shift", np.float32(GELU_MIN))], f"{p}/x_shifted")
        x = b.node("Mul", [x, b.const(f"{p}/inv_smooth", (1 / smooth[t.name]).astype(np.float32))], f"{p}/x_smooth")
        y = b.per_token_matmul(p, x, w, unsigned)
        if unsigned:
            # (x + c) @ W = x @ W + c * colsum(W): take it back out through the next bias.
            nxt = consumers[node.output[0]]
            if len(nxt) != 1 or nxt[0].op_type != "SkipLayerNormalization" or len(nxt[0].input) < 5:
                raise ValueError(f"{node.name}: expected one SkipLayerNormalization with a bias after the FFN output")
            bias = nxt[0].input[4]
            bias_delta[bias] = bias_delta.get(bias, 0) - GELU_MIN * weights[t.weight].sum(0)
        if t.op == "MatMul":
            b.nodes.append(helper.make_node("Identity", [y], [node.output[0]], name=f"{p}/out"))
        else:
            hidden = w.shape[1] // 3
            heads = next(a.i for a in node.attribute if a.name == "num_heads")
            split = helper.make_node(
                "Split", [y, b.const(f"{p}/qkv_sizes", np.array([hidden] * 3, np.int64))],
                [f"{p}/query", f"{p}/key", f"{p}/value"], name=f"{p}/split", axis=-1,
            )
            b.nodes.append(split)
            mask = node.input[3] if len(node.input) > 3 else ""
            b.nodes.append(helper.make_node(
                "MultiHeadAttention", [f"{p}/query", f"{p}/key", f"{p}/value", node.input[2], mask], [node.output[0]],
                name=f"{p}/mha", domain="com.microsoft", num_heads=heads,
            ))
    for name, delta in bias_delta.items():
        inits[name].CopyFrom(numpy_helper.from_array((weights[name] + delta).astype(np.float32), name))
    # Drop the fp32 weights that no node reads any more.
    used = {i for n in b.nodes for i in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(b.nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + b.inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return {
        "method": "smoothquant",
        "weights": "int8 per-channel symmetric",
        "activations": "uint8 per-token (one scale per row, from the row itself): batch-invariant",
        "smoothquant_alpha": alpha,
        "post_gelu": f"unsigned, shifted by {GELU_MIN}",
        "quantized_nodes": len(targets) - len(keep_fp32),
        "fp32_nodes": sorted(keep_fp32),
    }


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
