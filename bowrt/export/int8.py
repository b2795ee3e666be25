"""int8 variant for CPU: ONNX Runtime dynamic quantization, per-channel weights.

Weights become int8 (one scale per output channel); activations are quantized
to uint8 at run time, which is the u8 x s8 form that AVX-512 VNNI runs fastest.
Layers whose quantization costs too much ranking agreement can be kept in fp32;
which ones is decided by measurement in :mod:`bowrt.export.pipeline` and
recorded in the manifest.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

# The roles of the quantizable operators in a fused BERT layer, in the order
# in which keeping them in fp32 is tried (most sensitive first, measured on
# all-MiniLM-L6-v2: the attention projections matter most).
ROLES = ("attention", "ffn_out", "attn_out", "ffn_in")


def quantizable_roles(model: Any) -> dict[str, list[str]]:
    """Map each role to the names of the nodes that play it, in graph order."""
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    roles: dict[str, list[str]] = {role: [] for role in ROLES}
    for node in graph.node:
        if node.op_type == "Attention":
            roles["attention"].append(node.name)
        elif node.op_type == "MatMul" and node.input[1] in weights:
            src = producer.get(node.input[0])
            if src is not None and src.op_type in ("BiasGelu", "Gelu", "FastGelu"):
                roles["ffn_out"].append(node.name)
            elif src is not None and src.op_type == "Attention":
                roles["attn_out"].append(node.name)
            else:
                roles["ffn_in"].append(node.name)
    return roles


def quantize_dynamic_int8(src: Path, dst: Path, *, keep_fp32_roles: tuple[str, ...] = ()) -> dict[str, Any]:
    """Quantize ``src`` into ``dst``, keeping the nodes of ``keep_fp32_roles`` in fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    unknown = set(keep_fp32_roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; valid: {', '.join(ROLES)}")
    roles = quantizable_roles(onnx.load(str(src), load_external_data=False))
    excluded = [name for role in keep_fp32_roles for name in roles[role]]
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        nodes_to_exclude=excluded,
        # Needed on fused graphs: the contrib operators carry no type info the
        # quantizer can infer, and without a default it refuses to run.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return {
        "method": "dynamic",
        "weights": "int8 per-channel symmetric",
        "activations": "uint8 per-tensor, computed at run time",
        "fp32_roles": list(keep_fp32_roles),
        "fp32_nodes": len(excluded),
        "quantized_nodes": sum(len(v) for v in roles.values()) - len(excluded),
    }
