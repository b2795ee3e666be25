"""The smoothquant rewrite: the fused fp32 graph -> the int8 graph (package docstring:
what each piece is for).

Every weight MatMul and the fused Attention's QKV projection become SmoothQuant's
division (where a node is smoothed), activation quantization (per token or static),
the u8 x s8 GEMM with its float epilogue, and for attention ``Split`` plus ONNX's own
``Attention``; nodes named in ``keep_fp32`` stay as they were.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bowrt.errors import Int8SettingsError, UnsupportedGraphError
from bowrt.export.int8.builder import GraphBuilder
from bowrt.export.int8.calibrate import GELU_MIN, CalibrationStats, Target, find_targets
from bowrt.export.int8.choose import DEFAULT_ALPHA, MODES_ACT, smoothing_factors, static_amax
from bowrt.export.int8.gptq import ROUNDINGS, gptq_weights, round_weights

# QuantizeLinear with ``block_size`` (one scale per token row of a 3-D tensor) is opset 21
# (ONNX Runtime's CPU kernel has it since 1.19); the ONNX Attention operator is opset 23
# (CPU kernel since ONNX Runtime 1.23).
QUANTIZE_OPSET = 23
_REDUCE_OPS = ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")  # axes became an input in opset 18


@dataclass(frozen=True)
class _Rewrite:
    """What rewriting one node reads: the graph's weights and wiring, the per-node choices,
    and the builder that collects the new nodes."""

    b: GraphBuilder
    stats: CalibrationStats
    weights: dict[str, np.ndarray]
    smooth: dict[str, np.ndarray]
    consumers: dict[str, list[Any]]
    v_fold: dict[str, np.ndarray]  # Attention node -> the 1/s to apply to its V columns
    folded_into_v: set[str]  # attn_out MatMuls whose input arrives already smoothed
    keep_fp32: frozenset[str]
    modes: str | dict[str, str]
    rounding: str
    cache: dict[Any, tuple[np.ndarray, np.ndarray]]


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
        raise Int8SettingsError(f"unknown rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    cache = {} if cache is None else cache
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fused))
    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in graph.initializer}
    targets = {t.name: t for t in find_targets(model)}
    smooth = smoothing_factors(list(targets.values()), weights, stats.amax, alpha)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    v_fold, folded_into_v = _v_folds(graph, targets, consumers, smooth, keep_fp32)
    mask_input = next((i.name for i in graph.input if i.name == "attention_mask"), None)
    r = _Rewrite(GraphBuilder(graph.input[0].name, mask_input), stats, weights, smooth, consumers,
                 v_fold, folded_into_v, keep_fp32, modes, rounding, cache)
    for node in graph.node:
        t = targets.get(node.name)
        if t is None:
            r.b.nodes.append(node)
        else:
            _rewrite_node(r, node, t)
    _replace_nodes(model, r.b)
    onnx.save(model, str(dst))
    return _describe(len(targets), alpha=alpha, keep_fp32=keep_fp32, modes=modes, rounding=rounding)


def _v_folds(
    graph: Any, targets: dict[str, Target], consumers: dict[str, list[Any]], smooth: dict[str, np.ndarray],
    keep_fp32: frozenset[str],
) -> tuple[dict[str, np.ndarray], set[str]]:
    """The attention output projection's smoothing is folded into the V columns of the
    QKV projection (attention is linear in V), so it costs no operator at run time:
    (Attention node -> the 1/s for its V columns, the attn_out MatMuls so folded)."""
    output_of = {node.name: node.output[0] for node in graph.node}
    v_fold: dict[str, np.ndarray] = {}
    folded_into_v: set[str] = set()
    for t in targets.values():
        nxt = consumers.get(output_of[t.name], [])
        if t.op == "Attention" and len(nxt) == 1 and nxt[0].name in targets and nxt[0].name not in keep_fp32:
            v_fold[t.name] = smooth[nxt[0].name]
            folded_into_v.add(nxt[0].name)
    return v_fold, folded_into_v


def _rewrite_node(r: _Rewrite, node: Any, t: Target) -> None:
    """Append ``node``'s replacement to the builder: itself (fp32, V columns re-scaled
    where the next node's smoothing is folded into them) or its int8 form."""
    b = r.b
    p = f"q8/{node.name.strip('/')}"
    w = r.weights[t.weight]
    qkv_bias = r.weights[node.input[2]] if t.op == "Attention" else None
    if t.op == "Attention" and t.name in r.v_fold:
        hidden = w.shape[1] // 3
        inv = np.concatenate([np.ones(2 * hidden, np.float32), 1 / r.v_fold[t.name]])
        w = w * inv[None, :]
        qkv_bias = qkv_bias * inv
    if t.name in r.keep_fp32:
        if t.op == "Attention" and t.name in r.v_fold:
            node.input[1] = b.const(f"{p}/qkv_weight_fp32", w.astype(np.float32))
            node.input[2] = b.const(f"{p}/qkv_bias", qkv_bias.astype(np.float32))
        b.nodes.append(node)
        return
    s = r.smooth[t.name]
    w_q, w_scale = _rounded(r, t, w * s[:, None], s)
    mode = r.modes.get(t.name, "token") if isinstance(r.modes, dict) else r.modes
    if mode not in MODES_ACT:
        raise Int8SettingsError(f"{t.name}: unknown activation mode {mode!r}; valid: {', '.join(MODES_ACT)}")
    if mode == "static":
        # The calibration range of x / s (an input folded into V arrives divided by s).
        a = static_amax(r.stats.amax[t.x], s) / 127
        q = b.quantize_static(p, t.x, None if t.name in r.folded_into_v else s, a)
    else:
        x, unsigned = _token_input(b, p, t, t.x, s, smooth_op=t.name not in r.folded_into_v)
        if unsigned:
            _fold_gelu_shift(r, p, node, w_q=w_q, w_scale=w_scale, s=s)
        q = b.quantize_rows(p, x, w_q.shape[0], unsigned)
    static = mode == "static"
    if t.op == "MatMul":
        b.int8_matmul(p, q, w_q, w_scale, node.output[0], bias=_take_next_bias(r, node) if static else None)
    else:
        _attention(b, p, node, q, w_q=w_q, w_scale=w_scale, qkv_bias=qkv_bias, fuse_bias=static)


def _take_next_bias(r: _Rewrite, node: Any) -> np.ndarray | None:
    """A static node's bias, taken out of the SkipLayerNormalization that adds it next (its
    fifth input), for the GEMM's epilogue to add: one pass over the output fewer (the CPU
    variants split that SkipLayerNormalization into bias Add, skip Add and LayerNormalization).
    None where the next node is something else (e.g. BiasGelu, which adds its bias itself)."""
    nxt = r.consumers.get(node.output[0], [])
    if len(nxt) != 1 or nxt[0].op_type != "SkipLayerNormalization" or len(nxt[0].input) < 5 or not nxt[0].input[4]:
        return None
    bias = r.weights[nxt[0].input[4]]
    nxt[0].input[4] = ""
    return bias


def _rounded(r: _Rewrite, t: Target, w: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The int8 weights and scales of the smoothed ``w`` (= W * s), from the cache when
    these exact weights were rounded before."""
    key = (t.name, r.rounding, hashlib.sha1(w.tobytes()).hexdigest())
    if key not in r.cache and r.rounding == "nearest":
        r.cache[key] = round_weights(w)
    elif key not in r.cache:  # the GEMM's input is x / s: its X^T X is the calibration one over s s^T
        r.cache[key] = gptq_weights(w, r.stats.hessians[t.x] / np.outer(s, s).astype(np.float64))
    return r.cache[key]


def _replace_nodes(model: Any, b: GraphBuilder) -> None:
    """Put the builder's nodes in the graph, in topological order, drop the fp32 weights
    that no node reads any more, and raise the opset to what the new operators need."""
    from onnx import helper

    graph = model.graph
    used = {i for n in b.nodes for i in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(_topological(b.nodes, {i.name for i in graph.input} | {i.name for i in kept_inits + b.inits}))
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + [i for i in b.inits if i.name in used])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _to_opset(model, QUANTIZE_OPSET)


def _describe(
    n_targets: int, *, alpha: float | None | dict[str, float | None], keep_fp32: frozenset[str],
    modes: str | dict[str, str], rounding: str,
) -> dict[str, Any]:
    """The manifest's quantization section for a smoothquant graph."""
    return {
        "method": "smoothquant",
        "weights": "int8 per-channel symmetric" + (", GPTQ-rounded on the calibration texts" if rounding == "gptq" else ""),
        "activations": "uint8, per node either per-token (one scale per row, from the row itself) or static "
                       "(one scale from the calibration texts): batch-invariant either way",
        "activation_modes": ({k: modes[k] for k in sorted(modes)} if isinstance(modes, dict) else modes),
        # null: that node is not smoothed (no outlier channels worth an extra pass)
        "smoothquant_alpha": {k: alpha[k] for k in sorted(alpha)} if isinstance(alpha, dict) else alpha,
        "post_gelu": f"per-token nodes: unsigned, shifted by {GELU_MIN}",
        "static_bias": "static nodes add their bias in the GEMM's epilogue (exact with one A scale)",
        "quantized_nodes": n_targets - len(keep_fp32),
        "fp32_nodes": sorted(keep_fp32),
    }


def _attention(
    b: GraphBuilder, p: str, node: Any, q: tuple[str, str, int], *, w_q: np.ndarray, w_scale: np.ndarray, qkv_bias: np.ndarray,
    fuse_bias: bool = False,
) -> None:
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
    Add, but it changes what that projection quantizes; on MiniLM it measured no closer.)
    ``fuse_bias`` (static QKV, one scalar A scale): ONNX Runtime's ``QAttention`` instead, one
    operator for the int8 QKV GEMM with its whole bias in the epilogue (exact with one A scale;
    per-column weight scales), the heads written out without a ``Split``, and the contrib
    attention on the raw mask. On the twin it gave the same vectors (min cosine 1.0 against the
    Split form) and cut kernel time by 11 %, 1.04-1.05x on a corpus (docs/int8.md, speed profile)."""
    from onnx import helper

    attrs = {a.name: a for a in node.attribute}
    if "unidirectional" in attrs and attrs["unidirectional"].i:
        raise UnsupportedGraphError(f"{node.name}: unidirectional attention is not supported")
    if "qkv_hidden_sizes" in attrs or any(node.input[4:]):
        raise UnsupportedGraphError(f"{node.name}: only plain self-attention (no qkv_hidden_sizes, past or attention bias) is supported")
    heads = attrs["num_heads"].i
    extra = {"scale": attrs["scale"].f} if "scale" in attrs and attrs["scale"].f else {}
    hidden = w_q.shape[1] // 3
    if fuse_bias and not extra:  # QAttention takes no scale: the default 1/sqrt(head size) only
        x_q, scale, zp = q
        b.node("QAttention", [x_q, b.const(f"{p}/w_q", w_q), b.const(f"{p}/bias", qkv_bias.astype(np.float32)), scale,
                              b.const(f"{p}/w_scale", w_scale), b.raw_mask(), b.const(f"{p}/a_zp", np.uint8(zp))],
               node.output[0], num_heads=heads)
        return
    qkv = b.int8_matmul(p, q, w_q, w_scale, f"{p}/qkv", bias=qkv_bias if fuse_bias else None)
    query, key, value = f"{p}/query", f"{p}/key", f"{p}/value"
    b.nodes.append(helper.make_node(
        "Split", [qkv, b.const(f"{p}/qkv_sizes", np.array([hidden] * 3, np.int64))], [query, key, value], name=f"{p}/split", axis=-1,
    ))
    if not fuse_bias:
        query = b.node("Add", [query, b.const(f"{p}/query_bias", qkv_bias[:hidden].astype(np.float32))], f"{p}/query_biased")
        value = b.node("Add", [value, b.const(f"{p}/value_bias", qkv_bias[2 * hidden:].astype(np.float32))], f"{p}/value_biased")
    b.node("Attention", [query, key, value, b.key_mask()], node.output[0], q_num_heads=heads, kv_num_heads=heads, **extra)


def _token_input(b: GraphBuilder, p: str, t: Target, x: str, s: np.ndarray, smooth_op: bool) -> tuple[str, bool]:
    """The per-token path's input: post-GELU inputs shifted to be >= 0, then divided by the
    smoothing factors (unless they were folded upstream)."""
    unsigned = t.role == "ffn_out"
    if unsigned:
        x = b.node("Add", [x, b.const(f"{p}/shift", np.float32(GELU_MIN))], f"{p}/x_shifted")
    return (b.divide(p, x, s) if smooth_op else x), unsigned


def _fold_gelu_shift(r: _Rewrite, p: str, node: Any, *, w_q: np.ndarray, w_scale: np.ndarray, s: np.ndarray) -> None:
    """(x + c) @ W = x @ W + c * colsum(W): take the shift back out through the next bias."""
    nxt = r.consumers[node.output[0]]
    if len(nxt) != 1 or nxt[0].op_type != "SkipLayerNormalization" or len(nxt[0].input) < 5:
        raise UnsupportedGraphError(f"{node.name}: expected one SkipLayerNormalization with a bias after the FFN output")
    # A new initializer per node: the exporter shares identical ones (e.g. the all-zero
    # biases of a freshly initialized model) between layers. The column sums of the
    # *quantized* weights, so the shift cancels exactly and leaves no constant per-channel
    # offset in every token's output.
    w_x = (w_q.astype(np.float64) * w_scale) / s[:, None]
    bias = r.weights[nxt[0].input[4]] - GELU_MIN * w_x.sum(0)
    nxt[0].input[4] = r.b.const(f"{p}/next_bias", bias.astype(np.float32))


def _to_opset(model: Any, version: int) -> None:
    """Raise the default-domain opset of an opset >= 13 graph to ``version`` (<= 23): of the
    operators the exported graphs use, only the reductions that take axes changed form on
    the way (opsets 22-23 widened type support only)."""
    from onnx import numpy_helper

    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if opset.version < 13:
                raise UnsupportedGraphError(f"graph opset {opset.version} is too old to raise to {version}")
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
            raise UnsupportedGraphError(f"graph has a cycle or a missing input near {rest[0].name!r}")
        pending = rest
    return out
