"""The built-in text sets: probes (parity at export) and calibration (int8).

Both live in ``bowrt/export/data/`` as JSON: ``{"queries": [...], "passages":
[{"title": ..., "text": ...}, ...]}``. Probes cover short questions, passages
from ~20 to 256+ tokens, titles and no titles, unicode and near-empty strings.
The calibration set is disjoint from the probes, so agreement is never
measured on the texts int8 was tuned on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Iterator

import numpy as np

from bowrt.bundle import TextRules
from bowrt.errors import ExportOptionError
from bowrt.runtime.tokenize import pad_batch

SETS = ("probes", "calibration")


@dataclass(frozen=True)
class TextSet:
    name: str
    queries: tuple[str, ...]
    passages: tuple[tuple[str, str], ...]  # (title, text)
    sha256: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "queries": len(self.queries), "passages": len(self.passages), "sha256": self.sha256}


def load_text_set(name: str = "probes") -> TextSet:
    if name not in SETS:
        raise ExportOptionError(f"unknown text set {name!r}; valid: {', '.join(SETS)}")
    raw = resources.files("bowrt.export").joinpath("data", f"{name}.json").read_bytes()
    data = json.loads(raw)
    passages = tuple((str(p.get("title") or ""), str(p["text"])) for p in data["passages"])
    return TextSet(name, tuple(data["queries"]), passages, hashlib.sha256(raw).hexdigest())


def token_ids(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids with special tokens, truncated at ``max_length``: the runtime's rule.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` (the one written to the bundle).
    """
    tok = tokenizer.__class__.from_str(tokenizer.to_str())  # a private copy to configure
    tok.no_padding()
    tok.enable_truncation(max_length)
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]


def tokenized(tokenizer: Any, texts: TextSet, rules: TextRules) -> tuple[list[list[int]], list[list[int]]]:
    """(query ids, passage ids) for a text set under the bundle's rules."""
    q = token_ids(tokenizer, [rules.format_query(t) for t in texts.queries], rules.query_max_length)
    p = token_ids(tokenizer, [rules.format_passage(t, x) for t, x in texts.passages], rules.passage_max_length)
    return q, p


def padded_batches(ids: list[list[int]], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (row indices, input_ids, attention_mask), length-sorted, padded to each batch's longest."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, mask = pad_batch([ids[i] for i in rows])  # pad id 0, as the export's graphs are traced
        yield np.asarray(rows), input_ids, mask


RunFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def encode_ids(run: RunFn, ids: list[list[int]], batch_size: int = 16) -> np.ndarray:
    """Run ``run(input_ids, attention_mask) -> [b, hidden]`` over ``ids`` in batches; rows in input order."""
    out: np.ndarray | None = None
    for rows, input_ids, mask in padded_batches(ids, batch_size):
        vecs = np.asarray(run(input_ids, mask), dtype=np.float32)
        if out is None:
            out = np.empty((len(ids), vecs.shape[1]), dtype=np.float32)
        out[rows] = vecs
    return out if out is not None else np.zeros((0, 0), np.float32)


def torch_runner(model: Any, pooling: str) -> RunFn:
    """PyTorch fp32 eager reference with the same pooling as the graph."""
    import torch

    from bowrt.export.to_onnx import pooled_module

    module = pooled_module(model, pooling)

    def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(input_ids), torch.from_numpy(mask)).float().numpy()

    return run


def ort_runner(model_path: str, threads: int | None = None, *, spinning: bool = True) -> RunFn:
    """``spinning=False`` stops idle intra-op threads from busy-waiting, for benchmarks that
    alternate sessions call by call (one session's spinning threads would slow the other)."""
    from bowrt.runtime.session import ort_session

    sess = ort_session(model_path, threads=threads, spinning=spinning)  # as the runtime runs it on CPU
    names = [i.name for i in sess.get_inputs()]

    def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        return sess.run(None, {n: feeds[n] for n in names})[0]

    return run
