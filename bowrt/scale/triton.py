"""A bundle -> a Triton Inference Server model repository (onnxruntime backend).

    export_triton("bundles/fp16", "model_repository", kind="gpu")

    model_repository/bowrt_fp16/
      config.pbtxt     input_ids, attention_mask: TYPE_INT64 [-1]; embedding: TYPE_FP32 [hidden]
      1/model.onnx     the bundle's graph, byte for byte (its sha256 is in manifest.json), or,
                       for a bundle with ``normalize: true``, that graph ending in an L2
                       normalization (bowrt/scale/onnx_tail.py): Triton returns the unit
                       vectors the Encoder, the server and ``bowrt encode`` return
      1/model.onnx.data  its weights, where the graph keeps them in a data file (int8, bowrt >= 0.6)
      tokenizer.json   for the client, which tokenizes and pads before calling Triton
      manifest.json    the bundle manifest: max lengths, text rules, parity figures

Triton's dynamic batcher merges only requests whose tensors have the same shape
(variable dims are not padded for an ONNX model), so clients should pad to a few
fixed lengths: :func:`triton_inputs` pads queries to their max length and
passages to a multiple of ``PASSAGE_BUCKET`` tokens. On GPU the TensorRT
accelerator gets one optimization profile covering every shape a client can
send (rows <= max_batch_size, tokens <= the longest max length), FP16 for the
fp16 bundle; a dynamic int8 graph runs on CUDA, which TensorRT cannot take.
Writing the repository needs only the standard library; the test parses it
with Triton's own protobuf definitions (``tritonclient``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bowrt.atomic import atomic_folder
from bowrt.bundle import KINDS, MANIFEST, MODEL_FILE, TOKENIZER_FILE, Manifest, read_manifest, verify_bundle
from bowrt.errors import BundleFormatError, OptionError
from bowrt.options import check_choice, check_int

TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
INSTANCE_KINDS = ("cpu", "gpu")  # Triton instance_group kinds
PASSAGE_BUCKET = 64  # client-side padding granularity for passages (queries: their max length)
TRT_OPT_BATCH = 32
TRT_WORKSPACE_BYTES = 1 << 30
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _dims(shape: Sequence[Any]) -> list[int]:
    # Drop the batch dim (Triton adds it when max_batch_size > 0); named/unknown dims are variable.
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape[1:]]


def _tensor(spec: Any) -> str:
    if spec.dtype not in TRITON_TYPES:
        raise BundleFormatError(f"tensor {spec.name!r} has dtype {spec.dtype!r}; Triton types known: {', '.join(TRITON_TYPES)}")
    dims = ", ".join(str(d) for d in _dims(spec.shape))
    return f'  {{\n    name: "{spec.name}"\n    data_type: {TRITON_TYPES[spec.dtype]}\n    dims: [ {dims} ]\n  }}'


def _preferred(max_batch_size: int) -> list[int]:
    return sorted({b for b in (max_batch_size // 4, max_batch_size // 2, max_batch_size) if b >= 1})


def _shapes(names: Sequence[str], batch: int, seq: int) -> str:
    return ",".join(f"{n}:{batch}x{seq}" for n in names)


def _tensorrt(m: Manifest, max_batch_size: int) -> str:
    precision = "FP16" if m.variant == "fp16" else "FP32"
    longest = max(m.text.query_max_length, m.text.passage_max_length)
    params = {
        "precision_mode": precision,
        "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/tmp/bowrt-trt-cache",
        "trt_profile_min_shapes": _shapes(m.input_names, 1, 1),
        "trt_profile_opt_shapes": _shapes(m.input_names, min(TRT_OPT_BATCH, max_batch_size), max(1, m.text.passage_max_length // 2)),
        "trt_profile_max_shapes": _shapes(m.input_names, max_batch_size, longest),
    }
    lines = "\n".join(f'        parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items())
    return (
        "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
        f'      {{\n        name: "tensorrt"\n{lines}\n      }}\n    ]\n  }}\n}}\n'
    )


def triton_config(m: Manifest, name: str, *, max_batch_size: int = 64, instances: int = 1, kind: str = "cpu",
                  max_queue_delay_us: int = 2000, tensorrt: bool | None = None) -> str:
    """The ``config.pbtxt`` text for bundle manifest ``m``."""
    use_trt = (kind == "gpu" and m.variant in ("fp32", "fp16")) if tensorrt is None else tensorrt
    if use_trt and kind != "gpu":
        raise OptionError("tensorrt=True needs kind='gpu'")
    tail = "\n# The graph ends in an L2 normalization (the manifest's normalize: true)." if m.normalize else ""
    text = (
        f"# Written by bowrt from a {m.variant} bundle of {m.source_model}; see manifest.json next to it.{tail}\n"
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch_size}\n'
        "input [\n" + ",\n".join(_tensor(t) for t in m.inputs) + "\n]\n"
        "output [\n" + ",\n".join(_tensor(t) for t in m.outputs) + "\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in _preferred(max_batch_size))} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_{kind.upper()}\n  }}\n]\n"
    )
    return text + (_tensorrt(m, max_batch_size) if use_trt else "")


def portable_graph(m: Manifest) -> str:
    """The bundle graph to hand Triton: the server's CPU is not known here, so an int8
    bundle gives its graph exact on every ISA (the u8 x u8 twin where it has one;
    bowrt/export/int8/isa.py), never one that saturates on a non-VNNI server."""
    from bowrt.bundle import INT8_ISAS
    from bowrt.runtime import host

    table = host.graphs(m)
    return next((f for f, isas in table.items() if set(isas) >= set(INT8_ISAS)), MODEL_FILE)


def _write_graph(bundle: Path, name: str, dst: Path, m: Manifest) -> None:
    """The bundle graph ``name`` (a file of the bundle, or derived from one: runtime/twin.py),
    with the normalization the runtime applies after it when the manifest asks."""
    from bowrt.runtime.graphdata import external_files
    from bowrt.runtime.twin import open_graph

    with open_graph(bundle, m, name) as src:
        # A graph with its weights in a data file (int8, bowrt >= 0.6) takes it along: the tail
        # below edits nodes only, and Triton's ONNX Runtime finds the file beside the graph.
        for data_file in sorted(external_files(src)):
            shutil.copyfile(bundle / data_file, dst.parent / data_file)
        if not m.normalize:
            shutil.copyfile(src, dst)
            return
        from bowrt.scale.onnx_tail import append_l2_normalize

        data = append_l2_normalize(Path(src).read_bytes(), m.output_name)
    with open(dst, "wb") as f:
        f.write(data)


def export_triton(bundle: str | os.PathLike[str], out_repo: str | os.PathLike[str], name: str | None = None, *,
                  max_batch_size: int = 64, instances: int = 1, kind: str = "cpu", max_queue_delay_us: int = 2000,
                  tensorrt: bool | None = None, force: bool = False) -> Path:
    """Write ``out_repo/<name>/`` (default name ``bowrt_<variant>``); returns that folder.

    The bundle is verified first (sha256 of every file). With ``normalize: true`` in
    its manifest the graph gets an L2-normalizing last node, so Triton's vectors are
    the runtime's (Triton has no ``normalize`` request option). An existing model
    folder is refused unless ``force``; the new one is built aside and renamed
    into place, so Triton polling the repository never sees half a model.
    """
    check_choice("kind", kind, INSTANCE_KINDS)
    check_int("max_batch_size", max_batch_size)
    check_int("instances", instances)
    check_int("max_queue_delay_us", max_queue_delay_us, 0)
    bundle = Path(bundle)
    m = verify_bundle(bundle)
    name = name or f"bowrt_{m.variant}"
    if not _NAME.match(name):
        raise OptionError(f"name {name!r} must use only letters, digits, '_', '.', '-'")
    config = triton_config(m, name, max_batch_size=max_batch_size, instances=instances, kind=kind,
                           max_queue_delay_us=max_queue_delay_us, tensorrt=tensorrt)
    out_repo = Path(out_repo)
    target = out_repo / name
    with atomic_folder(target, force=force) as tmp:
        (tmp / "1").mkdir()
        _write_graph(bundle, portable_graph(m), tmp / "1" / MODEL_FILE, m)
        shutil.copyfile(bundle / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        shutil.copyfile(bundle / MANIFEST, tmp / MANIFEST)
        (tmp / "config.pbtxt").write_text(config, encoding="utf-8")
    return target


def triton_inputs(model_dir: str | os.PathLike[str], texts: Sequence[Any], kind: str = "passage") -> dict[str, np.ndarray]:
    """Client side: tokenize ``texts`` with the files next to ``config.pbtxt``, padded for Triton's batcher.

    Queries are padded to the query max length; passages to the next multiple of
    ``PASSAGE_BUCKET``. Returns ``{input name: int64 [n, length]}``; the row order is kept.
    """
    from bowrt.runtime.tokenize import TextTokenizer, pad_batch, validate_passages, validate_queries

    model_dir = Path(model_dir)
    m = read_manifest(model_dir)
    check_choice("kind", kind, KINDS)
    max_len = m.text.query_max_length if kind == "query" else m.text.passage_max_length
    tok = TextTokenizer(model_dir / TOKENIZER_FILE, max_len)
    rows = tok.encode(validate_queries(texts, m.text) if kind == "query" else validate_passages(texts, m.text))
    longest = max((len(r) for r in rows), default=1)
    length = max_len if kind == "query" else min(max_len, -(-longest // PASSAGE_BUCKET) * PASSAGE_BUCKET)
    ids, mask = pad_batch(rows, tok.pad_id, length)
    feeds = {"input_ids": ids, "attention_mask": mask}
    missing = [n for n in m.input_names if n not in feeds]
    if missing:
        raise BundleFormatError(f"the graph wants inputs {missing} that bowrt's Triton client does not feed")
    return {n: feeds[n] for n in m.input_names}


def describe(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``bowrt export-triton`` prints: the folder, tensors, and batching of a written model."""
    model_dir = Path(model_dir)
    m = read_manifest(model_dir)
    return {"model_dir": str(model_dir), "variant": m.variant, "inputs": m.input_names, "output": m.output_name,
            "hidden_size": m.hidden_size, "files": sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())}


__all__ = ["describe", "export_triton", "triton_config", "triton_inputs"]
