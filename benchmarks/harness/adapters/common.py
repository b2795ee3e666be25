"""What several adapters share: sentence-transformers' batching, pooling, a plain ONNX export, atomic folders.

Every adapter module imports from here and :mod:`benchmarks.harness.spec`, never from the
registry (:mod:`benchmarks.harness.adapters`) or from each other.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.spec import SystemSpec
from bowrt.atomic import atomic_folder

BATCH = 32  # batch size for systems that take one (transformers has none of its own: users loop)


def weights_bytes(folder: Path) -> int:
    names = ("model.safetensors", "pytorch_model.bin")
    return sum((folder / n).stat().st_size for n in names if (folder / n).is_file())


def length_order(texts: list[str]) -> np.ndarray:
    """SentenceTransformer.encode's order: longest text (in characters) first."""
    return np.argsort([-len(t) for t in texts], kind="stable")


def chunks(order: Any, batch: int) -> list[list[int]]:
    """``order`` (indices in run order) cut into batches of ``batch``: the groups an adapter's
    ``batches`` returns (see :mod:`benchmarks.harness.adapters`)."""
    order = [int(i) for i in order]
    return [order[s : s + batch] for s in range(0, len(order), batch)]


def encode_sorted(texts: list[str], batch: int, run: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """SentenceTransformer.encode's batching around ``run``: sort by length, batches of ``batch``, order restored."""
    order = length_order(texts)
    out = [run([texts[i] for i in order[s : s + batch]]) for s in range(0, len(texts), batch)]
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out)[np.argsort(order)]


class SortedBatches:
    """A peer run with SentenceTransformer.encode's batching: the folder's HF tokenizer, ``_run`` per batch."""

    sorts_by_length = True

    def __init__(self, spec: SystemSpec):
        from transformers import AutoTokenizer

        self.spec, self.batch = spec, BATCH
        self.tokenizer = AutoTokenizer.from_pretrained(spec.files["folder"])

    def _run(self, texts: list[str], kind: str) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        return encode_sorted(self.spec.prefixed(texts, kind), self.batch, lambda b: self._run(b, kind))

    def batches(self, texts: list[str], kind: str) -> list[list[int]]:
        return chunks(length_order(self.spec.prefixed(texts, kind)), self.batch)


def pool_np(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """:func:`pool` in numpy (``[b, s, h]`` float32, ``[b, s]`` 0/1)."""
    if pooling == "cls":
        vec = hidden[:, 0]
    else:
        m = mask[..., None].astype(np.float32)
        vec = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if normalize:
        vec = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    return vec.astype(np.float32)


def pool(hidden: Any, mask: Any, pooling: str, normalize: bool) -> Any:
    """CLS or masked mean over a torch ``[b, s, h]``, then optional L2 normalization."""
    if pooling == "cls":
        vec = hidden[:, 0]
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if normalize:
        vec = vec / vec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return vec


def export_hidden_state_onnx(model_dir: str, path: Path) -> Path:
    """A plain feature-extraction ONNX (``last_hidden_state`` out, no fusions), as ``optimum-cli export onnx`` makes."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    ids = torch.arange(16, dtype=torch.long).reshape(2, 8) % int(model.config.vocab_size)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so the mask computation is traced
    axes = {0: "batch", 1: "sequence"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about the mask, not actionable here
        torch.onnx.export(
            Hidden().eval(), (ids, mask, torch.zeros_like(ids)), str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
            opset_version=17, do_constant_folding=True, dynamo=False,
        )
    return path


def build_folder(folder: Path, src: Path, files: tuple[str, ...], build: Callable[[Path], None]) -> None:
    """Write ``folder`` atomically: ``build(tmp)`` makes the model files, ``files`` are copied from ``src``
    (those that exist), then ``tmp`` replaces ``folder``. An interrupted build leaves no half folder."""
    with atomic_folder(folder, force=True) as tmp:
        build(tmp)
        for name in files:
            if (src / name).is_file():
                shutil.copy(src / name, tmp / name)
