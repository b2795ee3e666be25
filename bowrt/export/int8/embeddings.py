"""int8 word embeddings: the int8 bundle's largest table, a quarter of its fp32 size.

BERT's word-embedding table (bert-base: 30,522 x 768 fp32, 94 MB) is half of an int8
graph whose GEMM weights are already int8. Here it is stored as int8 with one scale
per row (symmetric: scale = max|row| / 127) and dequantized after the lookup:

    ids --Gather(int8 table)--> Cast(float) --Mul(Gather(row scales))--> word vectors

A token's vector depends on its row alone, so it is exactly batch-invariant, and the
error is at most half a step of that row's own scale. ORT's fused
``EmbedLayerNormalization`` gathers from an fp32 table itself, so it is replaced by the
ops it stands for: the word vectors plus the position rows 0..S-1 (with segment 0's
row added in: the graph feeds token_type_ids 0 everywhere), then ``LayerNormalization``
with the same gamma, beta and epsilon, and, where ORT's own Attention reads the fused op's
mask index, each row's count of mask ones. The position table (512 rows) stays fp32.

A graph where the fused op is not found, or where it is fed segment ids that are not
provably zero, is left as it is (the embeddings stay fp32, and the manifest says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

EMBED_OP = "EmbedLayerNormalization"
EMBEDDINGS = ("int8", "fp32")  # the export's choice for the int8 variant; int8 is the default


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _zero_segments(graph: Any, name: str) -> bool:
    """Is ``name`` provably all zeros: ConstantOfShape with value 0 (or none), maybe Cast?"""
    from onnx import numpy_helper

    made = _producers(graph)
    node = made.get(name)
    while node is not None and node.op_type == "Cast":
        node = made.get(node.input[0])
    if node is None or node.op_type != "ConstantOfShape":
        return False
    value = [a for a in node.attribute if a.name == "value"]
    return not value or not numpy_helper.to_array(value[0].t).any()


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 rows and their float32 scales [rows, 1]: symmetric, one scale per row."""
    t = table.astype(np.float32)
    amax = np.abs(t).max(axis=1, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(t / scale), -127, 127).astype(np.int8)
    return q, scale


def _fused(model: Any) -> Any | None:
    nodes = [n for n in model.graph.node if n.op_type == EMBED_OP]
    if len(nodes) != 1:
        return None
    node = nodes[0]
    mask_unknown = _mask_index_used(model.graph, node) and not (len(node.input) > 7 and node.input[7])
    positions_given = len(node.input) > 8 and node.input[8]
    segments_zero = len(node.input) < 2 or not node.input[1] or _zero_segments(model.graph, node.input[1])
    return None if mask_unknown or positions_given or not segments_zero else node


def _mask_index_used(graph: Any, node: Any) -> bool:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    return len(node.output) > 1 and node.output[1] in used


def _replacement(node: Any, inits: dict[str, Any], mask_index: bool) -> tuple[list[Any], list[Any]]:
    """The nodes and initializers that compute what ``node`` (EmbedLayerNormalization) did;
    ``mask_index``: its mask-index output is used (by ORT's own Attention, for nodes kept fp32)."""
    from onnx import TensorProto, helper, numpy_helper

    word = numpy_helper.to_array(inits[node.input[2]])
    pos = numpy_helper.to_array(inits[node.input[3]]).astype(np.float32)
    if len(node.input) > 4 and node.input[4]:
        pos = pos + numpy_helper.to_array(inits[node.input[4]])[0].astype(np.float32)
    q, scale = quantize_rows(word)
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
    p = "q8/embeddings/"
    tensors = [numpy_helper.from_array(q, p + "word_q"), numpy_helper.from_array(scale, p + "word_scale"),
               numpy_helper.from_array(pos, p + "position_plus_segment0"),
               numpy_helper.from_array(np.array([0], np.int64), p + "zero"),
               numpy_helper.from_array(np.array([0], np.int64), p + "axis0")]
    ids = node.input[0]
    nodes = [
        helper.make_node("Gather", [p + "word_q", ids], [p + "rows_q"], name=p + "gather_q", axis=0),
        helper.make_node("Gather", [p + "word_scale", ids], [p + "rows_scale"], name=p + "gather_scale", axis=0),
        helper.make_node("Cast", [p + "rows_q"], [p + "rows_f"], name=p + "cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "rows_f", p + "rows_scale"], [p + "word"], name=p + "dequantize"),
        helper.make_node("Shape", [ids], [p + "length"], name=p + "length", start=1, end=2),
        helper.make_node("Slice", [p + "position_plus_segment0", p + "zero", p + "length", p + "axis0"],
                         [p + "positions"], name=p + "positions"),
        helper.make_node("Add", [p + "word", p + "positions"], [p + "sum"], name=p + "sum"),
        helper.make_node("LayerNormalization", [p + "sum", node.input[5], node.input[6]], [node.output[0]],
                         name=p + "layer_norm", axis=-1, epsilon=eps),
    ]
    if mask_index:  # the fused op's second output: each row's count of mask ones (int32), as its kernel computes it
        nodes.append(helper.make_node("ReduceSum", [node.input[7], p + "axis1"], [node.output[1]],
                                      name=p + "mask_index", keepdims=0))
        tensors.append(numpy_helper.from_array(np.array([1], np.int64), p + "axis1"))
    return nodes, tensors


def _prune(graph: Any) -> None:
    """Drop the nodes and initializers nothing reaches the outputs through."""
    needed = {o.name for o in graph.output}
    keep = []
    for n in reversed(graph.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def quantize_embeddings(src: Path, dst: Path) -> dict[str, Any] | None:
    """Write ``src`` with int8 word embeddings to ``dst``; returns what the manifest records,
    or None (``dst`` not written) where the graph has no embedding op this can replace."""
    import onnx

    model = onnx.load(str(src))
    node = _fused(model)
    inits = {i.name: i for i in model.graph.initializer}
    if node is None or node.input[2] not in inits:
        return None
    rows, dim = inits[node.input[2]].dims
    nodes, tensors = _replacement(node, inits, _mask_index_used(model.graph, node))
    at = list(model.graph.node).index(node)
    new = list(model.graph.node[:at]) + nodes + list(model.graph.node[at + 1:])
    del model.graph.node[:]
    model.graph.node.extend(new)
    model.graph.initializer.extend(tensors)
    _prune(model.graph)
    onnx.save(model, str(dst))
    return {"word_embeddings": f"int8, one scale per row ({rows} x {dim}), dequantized after the Gather",
            "position_embeddings": "fp32, segment 0's row added in",
            "fp32_bytes": int(rows) * int(dim) * 4, "int8_bytes": int(rows) * (int(dim) + 4)}
