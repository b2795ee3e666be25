"""The one table of systems the bench can run: every peer registers here, and the runner reads it.

A row says how to build the system's files (``prepare``, once, in the parent) and its
adapter (``load``), what it needs installed, its precision, and whether it may run in the
peer environment's worker when it cannot run in this process. The adapter modules import
only :mod:`benchmarks.harness.spec` and :mod:`.common`; nothing imports back up.

An adapter is any object with ``encode(texts, kind) -> ndarray`` and the attributes
``batching`` (a sentence), ``sorts_by_length`` and ``model_bytes``. It may also have
``batches(texts, kind) -> list[list[int]]``: the index groups that one ``encode`` call with
``texts`` runs as its batches, in run order (a group may join several whole batches: bowrt's are
joined to a peer's batch size). With it, the corpus workloads call the system
batch by batch, each batch's passages in one call, taking turns with the other systems
(:func:`benchmarks.harness.workloads.piece_order`); each call runs exactly one batch of the
whole call, so the work is the same. Without it, a system makes one call with the whole list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.adapters import (
    bowrt_runtime,
    ct2,
    fastembed_ort,
    llamacpp,
    openvino_ov,
    optimum_ort,
    ort_qint8,
    pytorch,
    sbert,
)
from benchmarks.harness.spec import SystemSpec


@dataclass(frozen=True)
class Entry:
    load: Callable[[SystemSpec], Any]
    prepare: Callable[[SystemSpec, Path], SystemSpec] | None = None
    needs: tuple[str, ...] = ()  # distributions that must be installed to run in this process
    precision: str = "fp32"
    peer_env: bool = False  # may run in the peer environment's worker when it cannot run here
    check: Callable[[], None] | None = None  # raises Unavailable when it cannot run here (beyond ``needs``)


HF = ("torch", "transformers")
PEERS: dict[str, Entry] = {
    "torch": Entry(pytorch.load_fp32, needs=HF),
    "torch-bf16": Entry(pytorch.load_bf16, needs=HF, precision="bf16"),
    "st": Entry(sbert.STSystem, needs=("torch", "sentence-transformers")),
    "st-onnx": Entry(sbert.STSystem, sbert.prepare_onnx, peer_env=True, check=sbert.require_optimum),
    "st-onnx-O3": Entry(sbert.STSystem, sbert.prepare_onnx, peer_env=True, check=sbert.require_optimum),
    "st-onnx-int8": Entry(sbert.STSystem, sbert.prepare_onnx, precision="int8", peer_env=True,
                          check=sbert.require_optimum),
    "ort-qint8": Entry(ort_qint8.StInt8System, ort_qint8.prepare, needs=(*HF, "onnx"), precision="int8"),
    "optimum": Entry(optimum_ort.OptimumSystem, optimum_ort.prepare, peer_env=True, check=sbert.require_optimum),
    "fastembed": Entry(fastembed_ort.FastembedSystem, fastembed_ort.prepare, needs=("fastembed", "torch")),
    "ct2-int8": Entry(ct2.CT2System, ct2.prepare, needs=("ctranslate2", *HF), precision="int8"),
    "ct2-fp32": Entry(ct2.CT2System, ct2.prepare, needs=("ctranslate2", *HF)),
    "openvino-fp32": Entry(openvino_ov.OpenVINOSystem, openvino_ov.prepare, needs=("openvino", *HF, "onnx"),
                           peer_env=True),
    "openvino-int8": Entry(openvino_ov.OpenVINOSystem, openvino_ov.prepare,
                           needs=("openvino", "nncf", *HF, "onnx"), precision="int8", peer_env=True),
    "llama.cpp": Entry(llamacpp.load, precision="int8", check=llamacpp.check),
}
# --against names that stand for several systems.
GROUPS = {"st-onnx": ("st-onnx", "st-onnx-O3", "st-onnx-int8"), "ct2": ("ct2-int8", "ct2-fp32"),
          "openvino": ("openvino-fp32", "openvino-int8")}
# bowrt's own bundles: ``bowrt-<variant>``, precision from the variant.
BOWRT = Entry(bowrt_runtime.BowrtSystem)
