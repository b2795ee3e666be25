"""fp16 variant: for CUDA and TensorRT; fp32 inputs/outputs.

Fused BERT operators (Attention, SkipLayerNormalization, EmbedLayerNormalization)
compute their LayerNorm statistics and the masked softmax in fp32 inside the
kernel and mask with a finite -10000, which is what keeps fp16 BERT free of the
NaNs reported for naive conversions (a -3.4e38 mask overflows to -inf in fp16).
Anything that was *not* fused and is numerically fragile stays fp32 here, and so
does pooling (a sum over up to 512 tokens).
On CPU the graph still runs (ONNX Runtime inserts Casts around fp16 nodes it has
no CPU kernel for) at roughly fp32 speed, so its parity can be tested anywhere.
"""

from __future__ import annotations

from pathlib import Path

# Unfused fragile operators kept in fp32 (absent from a fully fused graph).
FP32_OPS = ["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf"]


def pooling_nodes(graph) -> list[str]:
    """Names of the nodes after the encoder's last SkipLayerNormalization: the pooling head."""
    last = None
    for node in graph.node:
        if node.op_type in ("SkipLayerNormalization", "LayerNormalization"):
            last = node
    if last is None:
        return []
    frontier, names = set(last.output[:1]), []
    for node in graph.node:  # graph.node is topologically sorted
        if frontier.intersection(node.input):
            names.append(node.name)
            frontier.update(node.output)
    return names


def to_fp16(src: Path, dst: Path) -> dict[str, object]:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    kept = pooling_nodes(model.model.graph)
    model.convert_float_to_float16(keep_io_types=True, op_block_list=FP32_OPS, node_block_list=kept)
    model.save_model_to_file(str(dst))
    return {"method": "fp16", "fp32_ops": FP32_OPS, "fp32_nodes": kept}
