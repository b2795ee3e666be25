"""Graph fusion with ONNX Runtime's transformer optimizer.

Fuses the BERT subgraphs into ONNX Runtime's contrib operators
(EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu). The
fused graph is what every variant starts from.

The CPU variants (fp32, int8) then get one fusion undone: ONNX Runtime's CPU
kernel for SkipLayerNormalization is 2.4-2.8x slower than the plain Add +
LayerNormalization it replaces (ORT 1.32, [4096, 768] and [13, 768] inputs,
``python benchmarks/layernorm_check.py``); splitting it cut 11-13% off an int8
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
