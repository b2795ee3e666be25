"""The lean runtime: a bundle in, vectors out.

Imports only onnxruntime, tokenizers, numpy and the standard library, never
torch, transformers or onnx: this is what latency-sensitive apps embed and
edge hosts install.
"""

from __future__ import annotations

from bowrt.runtime.encoder import Encoder, Timings
from bowrt.runtime.plan import plan_batches
from bowrt.runtime.tokenize import Tokens

__all__ = ["Encoder", "Timings", "Tokens", "plan_batches"]
