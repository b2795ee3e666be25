"""``fastembed``: fastembed's ``TextEmbedding`` on a local folder (it cannot download here).

The folder is a plain feature-extraction ONNX export of the model (``last_hidden_state``,
no fusions, as ``optimum-cli export onnx`` writes it) with the tokenizer files, truncating
at the passage max length; registered with ``add_custom_model`` and loaded with
``specific_model_path``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.harness.adapters.common import build_folder, chunks, export_hidden_state_onnx
from benchmarks.harness.spec import SystemSpec, Unavailable, version

TOKENIZER_FILES = ("config.json", "tokenizer.json", "special_tokens_map.json", "vocab.txt")
EMBED_BATCH = 256  # fastembed's default batch size, which its users get


def prepare(spec: SystemSpec, work: Path) -> SystemSpec:
    """A fastembed-style local model folder: ``onnx/model.onnx`` + tokenizer files, truncation at the passage max."""
    if version("fastembed") is None:
        raise Unavailable("fastembed is not installed", fix="pip install fastembed")
    src = Path(spec.model_dir)
    folder = work / f"fastembed-{src.name}-{spec.passage_max_length}"

    def build(tmp: Path) -> None:
        export_hidden_state_onnx(str(src), tmp / "onnx" / "model.onnx")
        tok_cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
        tok_cfg["model_max_length"] = spec.passage_max_length  # fastembed truncates there
        tok_cfg.pop("max_length", None)
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg), encoding="utf-8")

    if not (folder / "onnx" / "model.onnx").is_file():
        build_folder(folder, src, TOKENIZER_FILES, build)
    return replace(spec, files={"folder": str(folder)})


class FastembedSystem:
    """fastembed ``TextEmbedding`` on a local folder (``add_custom_model`` + ``specific_model_path``)."""

    sorts_by_length = False

    def __init__(self, spec: SystemSpec):
        try:
            from fastembed import TextEmbedding
            from fastembed.common.model_description import ModelSource, PoolingType
        except ImportError as e:
            raise Unavailable(f"fastembed does not import ({e})", fix="pip install fastembed") from e
        self.spec = spec
        folder = Path(spec.files["folder"])
        name = f"bowrt-bench/{folder.name}-{spec.pooling}-{int(spec.normalize)}"
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        known = {m["model"].lower() for m in TextEmbedding.list_supported_models()}
        if name.lower() not in known:
            TextEmbedding.add_custom_model(
                model=name, pooling=PoolingType.CLS if spec.pooling == "cls" else PoolingType.MEAN,
                normalization=spec.normalize, sources=ModelSource(hf=name), dim=int(cfg["hidden_size"]),
                model_file="onnx/model.onnx",
            )
        providers = ["CUDAExecutionProvider"] if spec.device == "cuda" else ["CPUExecutionProvider"]
        self.model = TextEmbedding(model_name=name, specific_model_path=str(folder), threads=spec.threads, providers=providers)
        self.batching = f"embed(batch_size={EMBED_BATCH}) in the caller's order, padded per batch"
        self.model_bytes = (folder / "onnx" / "model.onnx").stat().st_size

    def batches(self, texts: list[str], kind: str) -> list[list[int]]:
        return chunks(range(len(texts)), EMBED_BATCH)  # embed's batches: the caller's order

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        # fastembed has one truncation length per model; switch it per kind (single-threaded use only).
        self.model.model.tokenizer.enable_truncation(max_length=self.spec.max_len(kind))
        return np.stack(list(self.model.embed(self.spec.prefixed(texts, kind), batch_size=EMBED_BATCH)))
