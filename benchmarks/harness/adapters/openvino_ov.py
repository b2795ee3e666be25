"""``openvino-fp32`` and ``openvino-int8``: OpenVINO on a plain ONNX export of the folder.

- the model: the plain feature-extraction ONNX (``last_hidden_state``, no fusions, as
  ``optimum-cli export onnx`` writes it; :func:`benchmarks.harness.adapters.common.export_hidden_state_onnx`),
  read by ``openvino.Core().read_model``. int8: NNCF post-training quantization as
  OpenVINO documents it, ``nncf.quantize(model, nncf.Dataset(...),
  model_type=nncf.ModelType.TRANSFORMER)``, calibrated on bowrt's calibration passages
  (``bowrt/export/data/calibration.json``: not the probe set the accuracy table uses),
  saved with ``openvino.save_model``;
- the run: ``Core().compile_model(model, "CPU", config)`` with ``INFERENCE_NUM_THREADS``
  and the latency hint. fp32 pins ``INFERENCE_PRECISION_HINT=f32``: on bf16/AMX CPUs
  OpenVINO's default would run bf16 and the row would not be fp32; int8 keeps OpenVINO's
  default for the layers NNCF left in float (the report's batching column names it).
  Batching: sentence-transformers' OpenVINO backend, i.e. ``SentenceTransformer.encode``
  (sort by length, batches of 32, padded per batch, order restored).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.harness.adapters.common import SortedBatches, build_folder, export_hidden_state_onnx, pool_np
from benchmarks.harness.spec import SystemSpec

CALIBRATION_ROWS = 128  # at most; the calibration set has fewer
INT8_FILE = "openvino/openvino_model_int8.xml"
PLAIN_FILE = "onnx/model.onnx"
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _calibration_feeds(folder: Path, max_length: int) -> list[dict[str, np.ndarray]]:
    """One feed per calibration passage (batch 1, unpadded), as NNCF's examples feed a transformer."""
    from transformers import AutoTokenizer

    from bowrt.export.probes import load_text_set

    texts = load_text_set("calibration")
    tok = AutoTokenizer.from_pretrained(str(folder))
    feeds = []
    for title, text in texts.passages[:CALIBRATION_ROWS]:
        enc = tok(f"{title} {text}" if title else text, truncation=True, max_length=max_length, return_tensors="np")
        ids = enc["input_ids"].astype(np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    return feeds


def quantize_int8(plain: Path, dst: Path, folder: Path, max_length: int) -> None:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(plain))
    feeds = _calibration_feeds(folder, max_length)
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    dst.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(dst))


def prepare(spec: SystemSpec, work: Path) -> SystemSpec:
    """The plain export (both) and the NNCF model (int8), once, keyed by folder and settings."""
    import openvino

    src = Path(spec.model_dir)
    key = hashlib.sha256(f"{src.resolve()}|{openvino.__version__}|{CALIBRATION_ROWS}|{spec.passage_max_length}".encode())
    folder = work / f"openvino-{src.name}-{key.hexdigest()[:10]}"
    model_file = INT8_FILE if spec.name == "openvino-int8" else PLAIN_FILE

    def build(tmp: Path) -> None:
        plain = export_hidden_state_onnx(str(src), tmp / PLAIN_FILE)
        for name in TOKENIZER_FILES:  # the calibration tokenizes from the folder being built
            if (src / name).is_file():
                (tmp / name).write_bytes((src / name).read_bytes())
        quantize_int8(plain, tmp / INT8_FILE, tmp, spec.passage_max_length)

    if not (folder / INT8_FILE).is_file():
        build_folder(folder, src, (), build)
    return replace(spec, files={"folder": str(folder), "model_file": model_file})


class OpenVINOSystem(SortedBatches):
    """An OpenVINO ``CompiledModel`` with SentenceTransformer.encode's batching (see the module docstring)."""

    def __init__(self, spec: SystemSpec):
        import openvino as ov

        super().__init__(spec)
        model_file = Path(spec.files["folder"]) / spec.files["model_file"]
        config = {"INFERENCE_NUM_THREADS": spec.threads, "PERFORMANCE_HINT": "LATENCY"}
        if spec.name == "openvino-fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.model = ov.Core().compile_model(str(model_file), "CPU", config)
        self.inputs = {i.get_any_name() for i in self.model.inputs}
        hint = self.model.get_property("INFERENCE_PRECISION_HINT")
        hint = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.batching = (f"as SentenceTransformer.encode(batch_size={self.batch}) (ST's OpenVINO backend): sorts by "
                         f"length, padded per batch; inference precision {hint}")
        weights = model_file.with_suffix(".bin") if model_file.suffix == ".xml" else None
        self.model_bytes = model_file.stat().st_size + (weights.stat().st_size if weights else 0)

    def _run(self, texts: list[str], kind: str) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.spec.max_len(kind), return_tensors="np")
        ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.model({k: v for k, v in feeds.items() if k in self.inputs})[0]
        return pool_np(np.asarray(hidden, dtype=np.float32), mask, self.spec.pooling, self.spec.normalize)
