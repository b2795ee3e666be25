"""torch -> ONNX: the encoder with pooling inside the graph.

The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and
sequence axes) and returns ``embedding`` of shape ``[batch, hidden]``, so the
``[batch, seq, hidden]`` tensor never leaves ONNX Runtime. token_type_ids are
fixed to zeros inside the graph (bowdpr was evaluated that way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
OPSET = 17


def pooled_module(model: Any, pooling: str) -> Any:
    """Wrap a transformers encoder so that forward(input_ids, attention_mask) returns pooled vectors."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            if pooling == "cls":
                return hidden[:, 0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    # eval() on the wrapper itself: torch.onnx.export restores the *wrapper's*
    # training flag afterwards, which would switch dropout back on in the encoder.
    return Pooled(model).eval()


def export_onnx(model: Any, pooling: str, path: Path, *, opset: int = OPSET) -> Path:
    """Export with the TorchScript-based exporter.

    Why not the default (dynamo) exporter: on its graphs ONNX Runtime's BERT
    optimizer fuses no Attention or EmbedLayerNormalization (measured here),
    and those fusions are most of the speed-up.
    """
    import torch

    from bowrt.export.quiet import no_tracer_warnings

    module = pooled_module(model, pooling)
    # Trace with one padded row: some transformers versions drop the mask
    # computation when the traced mask happens to be all ones.
    vocab = int(model.config.vocab_size)
    ids = torch.arange(16, dtype=torch.long).reshape(2, 8) % vocab
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    dynamic = {"batch": 0, "sequence": 1}
    with torch.no_grad(), no_tracer_warnings():  # the parity gate checks what they warn about
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                "input_ids": {v: k for k, v in dynamic.items()},
                "attention_mask": {v: k for k, v in dynamic.items()},
                OUTPUT_NAME: {0: "batch"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path
