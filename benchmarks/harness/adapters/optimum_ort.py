"""``optimum``: optimum's ``ORTModelForFeatureExtraction`` (exported from the folder at load) + the HF tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.harness.adapters.common import BATCH, chunks, pool, weights_bytes
from benchmarks.harness.adapters.sbert import require_optimum
from benchmarks.harness.spec import SystemSpec


class OptimumSystem:
    """optimum ``ORTModelForFeatureExtraction``, batches of 32 in the caller's order."""

    sorts_by_length = False

    def __init__(self, spec: SystemSpec):
        require_optimum()
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction
        from transformers import AutoTokenizer

        self.spec = spec
        so = ort.SessionOptions()
        so.intra_op_num_threads = spec.threads
        self.model = ORTModelForFeatureExtraction.from_pretrained(
            spec.model_dir, export=True, provider="CPUExecutionProvider", session_options=so
        )
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
        self.batching = f"batches of {BATCH} in the caller's order, padded to each batch's longest"
        self.model_bytes = weights_bytes(Path(spec.model_dir))

    def batches(self, texts: list[str], kind: str) -> list[list[int]]:
        return chunks(range(len(texts)), BATCH)  # the caller's order, as ``encode`` runs it

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        import torch

        texts = self.spec.prefixed(texts, kind)
        out = []
        for i in range(0, len(texts), BATCH):
            enc = self.tokenizer(texts[i : i + BATCH], padding=True, truncation=True, max_length=self.spec.max_len(kind),
                                 return_tensors="pt")
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state
            out.append(pool(torch.as_tensor(hidden).float(), enc["attention_mask"], self.spec.pooling,
                            self.spec.normalize).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def prepare(spec: SystemSpec, work: Path) -> SystemSpec:
    """Nothing to write (it exports at load); fails early, with the fix, where optimum cannot run."""
    require_optimum()
    return spec
