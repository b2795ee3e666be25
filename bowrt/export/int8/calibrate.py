"""Which nodes int8 rewrites, and what the calibration texts say about their inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GELU_MIN = 0.17  # -min GELU(x) = 0.16997..., rounded up
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")


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
