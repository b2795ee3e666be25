"""Graph fusion with ONNX Runtime's transformer optimizer.

Fuses the BERT subgraphs into ONNX Runtime's contrib operators
(EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu). The
fused graph is what every variant starts from.
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
