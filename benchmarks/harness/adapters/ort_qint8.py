"""``ort-qint8``: sentence-transformers' ONNX int8 model, built and run without optimum.

sentence-transformers' ONNX backend needs optimum-onnx, whose newest release pins
transformers < 4.58, so ``st-onnx-int8`` cannot run next to this project's
transformers. This peer stands in for it, built the same way:

- the model: a plain feature-extraction ONNX (``last_hidden_state``, no fusions, as
  optimum's exporter writes it), quantized exactly as
  ``export_dynamic_quantized_onnx_model(model, CONFIG)`` does it, with the CONFIG a user
  picks for the host (:data:`CONFIG_FOR_ISA`: ``avx512_vnni`` on VNNI and AMX hosts,
  ``avx2`` on AVX2 hosts, ``arm64`` on ARM): optimum's
  ``AutoQuantizationConfig.<CONFIG>(is_static=False)`` through ONNX Runtime's
  ``ONNXQuantizer``. That is: weights symmetric per channel (uint8 for avx2, else int8); activations uint8,
  asymmetric, per tensor, computed at run time; operators MatMul and Add; no
  ``MatMulConstBOnly``, so the attention's activation-by-activation MatMuls are
  quantized too (``quantize_dynamic`` would skip them);
- the run: an ONNX Runtime session with default options apart from the thread count,
  as optimum's ``ORTModel`` opens it; ``SentenceTransformer.encode``'s batching (sort by
  characters, longest first, batches of 32, each padded to its longest, order
  restored); the Hugging Face tokenizer; CLS or mean pooling; optional normalization.

It skips the layers around the session in the real path (torch tensors, ST's modules,
optimum's ``ORTModel``), so its speed and memory flatter it a little, if anything. The
export is the legacy torch exporter at opset 17 (optimum picks its own opset); ONNX
Runtime fuses both the same way at load.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.adapters.common import BATCH, build_folder, chunks, export_hidden_state_onnx, pool
from benchmarks.harness.spec import SystemSpec

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".h5", ".msgpack")  # not copied next to the ONNX model
# The quantization config a sentence-transformers user picks for the host (ST's efficiency
# docs: one per ISA), by the int8 kernel ONNX Runtime runs (bowrt.runtime.host.int8_isa).
# optimum's configs differ in the weight type only: u8 for avx2 (ONNX Runtime's u8 x u8
# kernel, exact there), s8 for the others; avx512 is what a user of an AVX-512 CPU without
# VNNI picks, and it saturates there (the int16 pairs of bowrt/export/int8/isa.py).
CONFIG_FOR_ISA = {"sse": "avx2", "avx2": "avx2", "avx512": "avx512", "avx_vnni": "avx512_vnni",
                  "avx512_vnni": "avx512_vnni", "amx": "avx512_vnni", "arm64": "arm64", "unknown": "avx512_vnni"}
U8_WEIGHT_CONFIGS = ("avx2",)


def host_config() -> str:
    from bowrt.runtime.host import int8_isa

    return CONFIG_FOR_ISA[int8_isa()]


def int8_file(config: str) -> str:
    """sentence-transformers' file name for the config's model."""
    return f"model_{'quint8' if config in U8_WEIGHT_CONFIGS else 'qint8'}_{config}.onnx"


# optimum's AutoQuantizationConfig.<config>(is_static=False) as ORTQuantizer hands it to ONNXQuantizer.
ST_QUANTIZER_ARGS: dict[str, Any] = {
    "per_channel": True, "reduce_range": False, "static": False, "tensors_range": None,
    "nodes_to_quantize": [], "nodes_to_exclude": [], "op_types_to_quantize": ["MatMul", "Add"],
    "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False, "EnableSubgraph": False,
                      "ForceSymmetric": False, "AddQDQPairToWeight": False, "DedicatedQDQPair": False,
                      "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}},
}


def quantize_like_st(src: Path, dst: Path, config: str) -> None:
    """``src`` -> ``dst`` with optimum's dynamic int8 settings for ``config`` (see the module docstring)."""
    import onnx
    from onnxruntime.quantization import QuantizationMode, QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer

    weights = QuantType.QUInt8 if config in U8_WEIGHT_CONFIGS else QuantType.QInt8
    quantizer = ONNXQuantizer(onnx.load(str(src)), mode=QuantizationMode.IntegerOps, weight_qType=weights,
                              activation_qType=QuantType.QUInt8, **ST_QUANTIZER_ARGS)
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(dst))


def prepare(spec: SystemSpec, work: Path) -> SystemSpec:
    """Export and quantize once into ``work``; the spec's ``files`` name the folder."""
    src = Path(spec.model_dir)
    config = host_config()
    name = int8_file(config)
    key = hashlib.sha256(f"{src.resolve()}|{config}|{ST_QUANTIZER_ARGS}".encode()).hexdigest()[:10]
    folder = work / f"ort-qint8-{src.name}-{key}"  # a stale folder of another model or setting is never reused

    def build(tmp: Path) -> None:
        plain = export_hidden_state_onnx(str(src), tmp / "onnx" / "model.onnx")
        quantize_like_st(plain, tmp / "onnx" / name, config)
        plain.unlink()

    if not (folder / "onnx" / name).is_file():
        others = tuple(p.name for p in sorted(src.iterdir()) if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES))
        build_folder(folder, src, others, build)  # config and every tokenizer file, as ST copies the folder
    return replace(spec, files={"folder": str(folder), "onnx_file": f"onnx/{name}", "config": config})


class StInt8System:
    """The quantized model through ONNX Runtime with sentence-transformers' batching (see the module docstring)."""

    sorts_by_length = True

    def __init__(self, spec: SystemSpec):
        from transformers import AutoTokenizer

        from bowrt.runtime.session import ort_session

        self.spec = spec
        folder = Path(spec.files["folder"])
        # The runtime's session builder, with ORT's optimizers all on (the peer ships no
        # rewrite contract): what sentence-transformers' ONNX backend runs, on bowrt's options.
        self.session = ort_session(folder / spec.files["onnx_file"], threads=spec.threads, disabled=())
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.batch = BATCH
        self.batching = (f"a reconstruction of st-onnx-int8 without optimum; as SentenceTransformer.encode(batch_size={BATCH}): "
                         "sorts by length (characters), padded per batch")
        self.model_bytes = (folder / spec.files["onnx_file"]).stat().st_size

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        import torch

        order = np.argsort([-len(t) for t in texts])  # ST sorts the caller's texts, before any prompt
        texts = self.spec.prefixed(texts, kind)
        out: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch):
            enc = self.tokenizer([texts[i] for i in order[start : start + self.batch]], padding=True,
                                 truncation="longest_first", max_length=self.spec.max_len(kind), return_tensors="np")
            ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
            vec = pool(torch.from_numpy(hidden), torch.from_numpy(mask), self.spec.pooling, self.spec.normalize)
            out.append(vec.numpy())  # ST pools in torch too
        if not out:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(out)[np.argsort(order)]

    def batches(self, texts: list[str], kind: str) -> list[list[int]]:
        return chunks(np.argsort([-len(t) for t in texts]), self.batch)  # the order of ``encode``

