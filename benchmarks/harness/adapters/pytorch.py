"""``torch`` and ``torch-bf16``: transformers' ``AutoModel`` eager, fp32 or under bf16 autocast; the reference."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.adapters.common import BATCH, chunks, pool, weights_bytes
from benchmarks.harness.spec import SystemSpec

_MODELS: dict[tuple[str, str], Any] = {}  # fp32 and bf16 autocast share one copy in a process


class TorchSystem:
    """transformers ``AutoModel`` eager; fp32, or bf16 under ``torch.autocast``."""

    sorts_by_length = False

    def __init__(self, spec: SystemSpec, bf16: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.spec, self.bf16 = spec, bf16
        torch.set_num_threads(spec.threads)
        key = (spec.model_dir, spec.device)
        if key not in _MODELS:
            try:
                model = AutoModel.from_pretrained(spec.model_dir, add_pooling_layer=False)
            except TypeError:  # not a BERT: no pooler switch
                model = AutoModel.from_pretrained(spec.model_dir)
            _MODELS[key] = (AutoTokenizer.from_pretrained(spec.model_dir), model.eval().to(spec.device))
        self.tokenizer, self.model = _MODELS[key]
        self.batching = f"batches of {BATCH} in the caller's order, padded to each batch's longest"
        self.model_bytes = weights_bytes(Path(spec.model_dir))

    def batches(self, texts: list[str], kind: str) -> list[list[int]]:
        return chunks(range(len(texts)), BATCH)  # the caller's order, as ``encode`` runs it

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        import torch

        texts = self.spec.prefixed(texts, kind)
        out = []
        amp = torch.autocast(self.spec.device, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with torch.inference_mode(), amp:
            for i in range(0, len(texts), BATCH):
                enc = self.tokenizer(
                    texts[i : i + BATCH], padding=True, truncation=True, max_length=self.spec.max_len(kind), return_tensors="pt"
                )
                ids, mask = enc["input_ids"].to(self.spec.device), enc["attention_mask"].to(self.spec.device)
                hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
                out.append(pool(hidden.float(), mask, self.spec.pooling, self.spec.normalize).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def load_fp32(spec: SystemSpec) -> TorchSystem:
    return TorchSystem(spec)


def load_bf16(spec: SystemSpec) -> TorchSystem:
    return TorchSystem(spec, bf16=True)
