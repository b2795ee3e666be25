"""``ct2-int8`` and ``ct2-fp32``: CTranslate2's ``Encoder``, the model converted with its own converter.

- the model: ``ctranslate2.converters.TransformersConverter(folder).convert(out,
  quantization=...)``, as ``ct2-transformers-converter --quantization int8|float32`` does
  it; int8 is CTranslate2's own scheme (int8 weights per row, activations quantized per
  token at run time), not bowrt's;
- the run: ``Encoder(path, compute_type=..., intra_threads=threads)``; token ids from the
  folder's Hugging Face tokenizer, unpadded (``forward_batch`` takes ragged ids and pads
  inside); ``last_hidden_state`` pooled as the bundle says. Batching: CTranslate2's recipe
  for sentence embeddings wraps its Encoder in ``SentenceTransformer.encode``, so this is
  that batching (sort by length, batches of 32, order restored).

transformers 5 no longer sets ``BertConfig.position_embedding_type``, which the
converter's BERT loader asserts is ``"absolute"``: the conversion reads a copy of the
folder whose ``config.json`` states that default explicitly (links to the same weights).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.harness.adapters.common import SortedBatches, build_folder, pool_np
from benchmarks.harness.spec import SystemSpec

QUANTIZATION = {"ct2-int8": "int8", "ct2-fp32": "float32"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "config.json")


def _conversion_source(src: Path, tmp: Path) -> Path:
    """``src`` as the converter needs it: links to every file, ``config.json`` with the BERT defaults spelled out."""
    out = tmp / "hf"
    out.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "config.json":
            (out / f.name).symlink_to(f.resolve())
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    cfg.setdefault("position_embedding_type", "absolute")  # transformers < 5's default; the converter asserts it
    (out / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return out


def prepare(spec: SystemSpec, work: Path) -> SystemSpec:
    """Convert once into ``work`` (keyed by folder, quantization and CTranslate2 version)."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    src = Path(spec.model_dir)
    quant = QUANTIZATION[spec.name]
    key = hashlib.sha256(f"{src.resolve()}|{quant}|{ctranslate2.__version__}".encode()).hexdigest()[:10]
    folder = work / f"{spec.name}-{src.name}-{key}"

    def build(tmp: Path) -> None:
        hf = _conversion_source(src, tmp)
        TransformersConverter(str(hf)).convert(str(tmp / "ct2"), quantization=quant, force=True)
        for f in hf.iterdir():
            f.unlink()
        hf.rmdir()

    if not (folder / "ct2" / "model.bin").is_file():
        build_folder(folder, src, TOKENIZER_FILES, build)
    return replace(spec, files={"folder": str(folder), "quantization": quant})


class CT2System(SortedBatches):
    """``ctranslate2.Encoder.forward_batch`` with SentenceTransformer.encode's batching (see the module docstring)."""

    def __init__(self, spec: SystemSpec):
        import ctranslate2

        super().__init__(spec)
        folder = Path(spec.files["folder"])
        self.compute_type = spec.files["quantization"]
        self.encoder = ctranslate2.Encoder(str(folder / "ct2"), device=spec.device, compute_type=self.compute_type,
                                           intra_threads=spec.threads, inter_threads=1)
        self.batching = (f"as SentenceTransformer.encode(batch_size={self.batch}) (CTranslate2's embedding recipe): "
                         f"sorts by length, ragged ids, compute_type {self.compute_type}")
        self.model_bytes = (folder / "ct2" / "model.bin").stat().st_size

    def _run(self, texts: list[str], kind: str) -> np.ndarray:
        ids = self.tokenizer(texts, truncation=True, max_length=self.spec.max_len(kind))["input_ids"]
        out = self.encoder.forward_batch(ids, token_type_ids=[[0] * len(r) for r in ids])
        hidden = np.asarray(out.last_hidden_state, dtype=np.float32)
        lengths = np.array([len(r) for r in ids])
        mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
        return pool_np(hidden, mask, self.spec.pooling, self.spec.normalize)
