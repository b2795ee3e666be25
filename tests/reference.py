"""PyTorch reference vectors for tests: transformers' own tokenizer and model, nothing from bowrt.

Independent of the export code on purpose, so a runtime test compares the whole
bowrt path (tokenization included) against plain Hugging Face.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def _load(model_dir: str):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, config=config, add_pooling_layer=False).eval()
    return AutoTokenizer.from_pretrained(model_dir), model


def torch_reference(model_dir, texts: list[str], max_length: int, pooling: str = "cls", batch_size: int = 16) -> np.ndarray:
    """Pooled fp32 vectors from PyTorch eager, token_type_ids all zero, batches padded to their longest."""
    import torch

    tokenizer, model = _load(str(model_dir))
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state
        if pooling == "cls":
            vec = hidden[:, 0]
        else:
            m = enc["attention_mask"].unsqueeze(-1).float()
            vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out.append(vec.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)
