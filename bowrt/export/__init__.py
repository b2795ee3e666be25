"""The export stage: a Hugging Face encoder -> verified ONNX bundles (needs the ``export`` extra)."""

from __future__ import annotations

from bowrt.export.pipeline import export_model, parse_variants

__all__ = ["export_model", "parse_variants"]
