"""Graph fusion with ONNX Runtime's transformer optimizer.

Fuses the BERT subgraphs into ONNX Runtime's contrib operators
(EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu). The
fused graph is what every variant starts from.

The CPU variants (fp32, int8) then get one fusion undone: ONNX Runtime's CPU
kernel for SkipLayerNormalization is 2.4-2.8x slower than the plain Add +
LayerNormalization it replaces (ORT 1.32, [4096, 768] and [13, 768] inputs,
``python benchmarks/studies/layernorm_check.py``); splitting it cut 11-13% off an int8
forward pass of the bert-base twin at 32 x 128 and 4% off fp32.
:func:`split_skip_layer_norms` rewrites it back, and the runtime keeps ORT
from re-fusing it on CPU (``CPU_DISABLED_OPTIMIZERS`` in runtime/session.py);
on CUDA, ORT's own fusion puts SkipLayerNormalization back at session load.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

# Operators a fused BERT graph must contain; their absence means the export
# drifted from the pattern the optimizer knows, and speed would quietly suffer.
REQUIRED_FUSIONS = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization")


def fuse(src: Path, dst: Path, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse ``src`` into ``dst``; return the fused operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: only the Python fusions. The rest (constant folding, layout)
    # is ONNX Runtime's job at session creation, where it knows the hardware.
    opt = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
    opt.save_model_to_file(str(dst))
    return op_counts(opt.model)


def split_skip_layer_norms(src: Path, dst: Path) -> int:
    """Rewrite each SkipLayerNormalization of ``src`` as [Add bias] + Add skip +
    LayerNormalization (same arithmetic) into ``dst``; return how many were split."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization" or any(node.output[1:]):
            nodes.append(node)  # one whose mean / sum outputs are read stays fused
            continue
        count += 1
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        x, skip, gamma = node.input[:3]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        p = node.name or node.output[0]
        if bias:
            nodes.append(helper.make_node("Add", [x, bias], [f"{p}/biased"], name=f"{p}/add_bias"))
            x = f"{p}/biased"
        nodes.append(helper.make_node("Add", [x, skip], [f"{p}/sum"], name=f"{p}/add_skip"))
        ln_inputs = [f"{p}/sum", gamma] + ([beta] if beta else [])
        nodes.append(helper.make_node(
            "LayerNormalization", ln_inputs, [node.output[0]], name=f"{p}/layer_norm", axis=-1, epsilon=eps
        ))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return count


def op_counts(model: Any) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model.graph.node))


def check_fusions(counts: dict[str, int], num_layers: int) -> list[str]:
    """Return the problems found (empty when every layer got its fused operators)."""
    problems = []
    for op in REQUIRED_FUSIONS:
        want = {"Attention": num_layers, "EmbedLayerNormalization": 1}.get(op, 1)
        if counts.get(op, 0) < want:
            problems.append(f"{op}: found {counts.get(op, 0)}, expected at least {want}")
    return problems


# Operators whose output row t depends only on row t of their inputs (for the checks a
# node must also pass, see _row_wise). Attention is not among them: it mixes rows.
ROW_WISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Abs", "Cast", "Identity", "Erf", "Sqrt", "Tanh", "Relu",
    "Gelu", "FastGelu", "BiasGelu", "LayerNormalization", "SkipLayerNormalization", "MatMul",
    "MatMulIntegerToFloat", "QuantizeLinear", "ReduceMax",
})
ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention", "QAttention"})


def cls_tail(src: Path, dst: Path) -> int:
    """For a graph whose output is the CLS row (``Gather(x, 0, axis=1)``): run what follows
    the last attention on the CLS row only. Returns how many operators now do.

    After the last layer's attention, every operator is row-wise (output projection,
    layer norms, FFN, int8 per-token quantization), and only row 0 reaches the output.
    The rewrite slices each tensor entering that tail to row 0 (``Gather`` with indices
    [0], keeping the axis), so the last layer's output projection and FFN, three quarters
    of its GEMM work, run on one row per text instead of all of them. The arithmetic of
    the CLS row is unchanged. A graph with anything else (mean pooling, an operator not
    known to be row-wise, e.g. per-tensor dynamic quantization) is written back unchanged
    and 0 is returned."""
    import onnx

    model = onnx.load(str(src))
    count = _slice_tail(model.graph)
    onnx.save(model, str(dst))
    return count


def _slice_tail(graph: Any) -> int:
    import numpy as np
    from onnx import helper, numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {out: node for node in graph.node for out in node.output}
    if len(graph.output) != 1 or graph.output[0].name not in producer:
        return 0
    gather = producer[graph.output[0].name]
    axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
    index = consts.get(gather.input[1]) if gather.op_type == "Gather" else None
    if axis != 1 or index is None or index.shape != () or int(index) != 0:
        return 0
    # Everything the attentions depend on (themselves included) stays as it is.
    fixed: set[int] = set()
    stack = [n for n in graph.node if n.op_type in ATTENTION_OPS]
    while stack:
        node = stack.pop()
        if id(node) in fixed:
            continue
        fixed.add(id(node))
        stack.extend(producer[i] for i in node.input if i in producer)
    if not fixed:
        return 0
    tail: dict[int, Any] = {}  # a ConstantOfShape (int8 zero points, [B, S, 1]) stays outside: it enters sliced
    stack = [producer[gather.input[0]]] if gather.input[0] in producer else []
    while stack:
        node = stack.pop()
        if id(node) in tail or id(node) in fixed or node.op_type in ("Constant", "ConstantOfShape"):
            continue
        if not _row_wise(node, consts):
            return 0
        tail[id(node)] = node
        stack.extend(producer[i] for i in node.input if i in producer)
    if not tail:
        return 0
    made = {o for n in tail.values() for o in n.output}
    rows = "cls_tail/row0"
    sliced: dict[str, str] = {}
    new_nodes = []
    for node in tail.values():
        for k, name in enumerate(node.input):
            if not name or name in consts or name in made:
                continue
            if name not in sliced:  # a tensor entering the tail: [B, S, ...] -> [B, 1, ...]
                sliced[name] = f"cls_tail/{name}"
                new_nodes.append(helper.make_node("Gather", [name, rows], [sliced[name]], name=sliced[name], axis=1))
            node.input[k] = sliced[name]
    graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), rows))
    # Each slice goes right after its tensor's producer (or first, for a graph input).
    ordered = [n for n in new_nodes if n.input[0] not in producer]
    for node in graph.node:
        ordered.append(node)
        ordered.extend(n for n in new_nodes if n.input[0] in node.output)
    del graph.node[:]
    graph.node.extend(ordered)
    return len(tail)


def _row_wise(node: Any, consts: dict[str, Any]) -> bool:
    if node.domain not in ("", "ai.onnx", "com.microsoft") or node.op_type not in ROW_WISE:
        return False
    if node.op_type in ("MatMul", "MatMulIntegerToFloat"):  # activation x weight, not activation x activation
        return node.input[1] in consts and consts[node.input[1]].ndim == 2
    if node.op_type == "ReduceMax":  # over the hidden axis only
        axes = consts.get(node.input[1]) if len(node.input) > 1 else None
        if axes is None:
            axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        return axes is not None and [int(a) for a in axes] in ([-1], [2])
    if node.op_type == "QuantizeLinear":  # per tensor (a constant scale) or in blocks along the hidden axis
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        return node.input[1] in consts or axis in (-1, 2)
    if node.op_type in ("LayerNormalization", "SkipLayerNormalization"):
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        return axis in (-1, 2)
    return True
