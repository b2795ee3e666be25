"""``st`` and ``st-onnx`` / ``st-onnx-O3`` / ``st-onnx-int8``: sentence-transformers' ``SentenceTransformer.encode``.

``st`` runs its torch backend; the ``st-onnx`` family its ONNX backend (plain, the O3
optimization of its efficiency guide for CPU, and the dynamic int8 model for this host's
ISA), exported the way its docs say. The ONNX backend needs optimum-onnx, whose only
release pins transformers < 4.58: where that does not hold, these run in the peer
environment (:mod:`benchmarks.harness.peer_env`).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.adapters import ort_qint8
from benchmarks.harness.adapters.common import BATCH, chunks, weights_bytes
from benchmarks.harness.peer_env import BUILD_COMMAND
from benchmarks.harness.spec import SystemSpec, Unavailable, version

O_LEVEL = "O3"  # sentence-transformers' efficiency guide example for CPU


def require_optimum() -> None:
    """Raise :class:`Unavailable` (with the fix) unless optimum's ONNX Runtime backend imports here."""
    try:
        import optimum.onnxruntime  # noqa: F401
    except Exception as e:  # ImportError, or an incompatible transformers breaking its imports
        tf = version("transformers") or "?"
        why = f"{type(e).__name__}: {e}" if version("optimum-onnx") else "optimum-onnx is not installed"
        if tf.split(".")[0].isdigit() and int(tf.split(".")[0]) >= 5:
            why = f"optimum-onnx 0.1.0, its only release, needs transformers<4.58 (here: {tf})"
        raise Unavailable(f"needs optimum's ONNX Runtime backend: {why}", fix=BUILD_COMMAND) from e


def _st_modules() -> Any:
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules
    return modules


class STSystem:
    """sentence-transformers ``SentenceTransformer.encode``: torch, or its ONNX backend (plain / O3 / int8)."""

    sorts_by_length = True

    def __init__(self, spec: SystemSpec):
        import torch
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        torch.set_num_threads(spec.threads)
        mods = _st_modules()
        if spec.name == "st":
            tr = mods.Transformer(spec.model_dir, max_seq_length=spec.passage_max_length)
            self.model_bytes = weights_bytes(Path(spec.model_dir))
        else:
            require_optimum()
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = spec.threads
            kwargs = {"provider": "CPUExecutionProvider", "session_options": so, "file_name": spec.files["onnx_file"]}
            tr = mods.Transformer(spec.files["folder"], max_seq_length=spec.passage_max_length, backend="onnx", model_kwargs=kwargs)
            self.model_bytes = (Path(spec.files["folder"]) / spec.files["onnx_file"]).stat().st_size
        dim = tr.get_embedding_dimension() if hasattr(tr, "get_embedding_dimension") else tr.get_word_embedding_dimension()
        modules = [tr, mods.Pooling(dim, pooling_mode=spec.pooling)] + ([mods.Normalize()] if spec.normalize else [])
        self.model = SentenceTransformer(modules=modules, device=spec.device)
        self.batching = f"encode(batch_size={BATCH}): sorts by length (characters), padded per batch"

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        self.model.max_seq_length = self.spec.max_len(kind)
        return self.model.encode(self.spec.prefixed(texts, kind), batch_size=BATCH, convert_to_numpy=True,
                                 show_progress_bar=False)

    def batches(self, texts: list[str], kind: str) -> list[list[int]]:
        """The batches ``encode`` runs: SentenceTransformer.encode's own sort, by its own length rule."""
        m, texts = self.model, self.spec.prefixed(texts, kind)
        length = getattr(m, "_input_length", None) or m._text_length  # sentence-transformers >= 6 / older
        order = np.argsort([-length(t) for t in texts])
        if getattr(m, "_can_flatten_inputs", lambda: False)():
            order = m._interleave_sorted_indices(order)
        return chunks(order, BATCH)


def prepare_onnx(spec: SystemSpec, work: Path) -> SystemSpec:
    """Export the ST ONNX model (and its O3 / int8 variants) into a copy of the folder, once."""
    require_optimum()
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import (
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    folder = work / f"st-onnx-{Path(spec.model_dir).name}"
    config = ort_qint8.host_config()  # the quantization config for this host's ISA, as ST's docs advise
    files = {"st-onnx": "onnx/model.onnx", "st-onnx-O3": f"onnx/model_{O_LEVEL}.onnx",
             "st-onnx-int8": f"onnx/{ort_qint8.int8_file(config)}"}
    if not (folder / files[spec.name]).is_file():
        if not (folder / files["st-onnx"]).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(spec.model_dir, folder)
            SentenceTransformer(str(folder), backend="onnx", device="cpu").save(str(folder))  # exports onnx/model.onnx
        model = SentenceTransformer(str(folder), backend="onnx", device="cpu")
        if spec.name == "st-onnx-O3":
            export_optimized_onnx_model(model, O_LEVEL, str(folder))
        elif spec.name == "st-onnx-int8":
            export_dynamic_quantized_onnx_model(model, config, str(folder))
    return replace(spec, files={"folder": str(folder), "onnx_file": files[spec.name]})
