"""``dynamic``: ONNX Runtime's standard dynamic int8, the baseline the benchmarks compare against."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
