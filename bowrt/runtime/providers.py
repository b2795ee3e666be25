"""Which ONNX Runtime providers a session asks for, and with which options.

Providers are chosen explicitly and checked: a provider asked for by name that this
onnxruntime build lacks is an error naming what is available (the check that it really
took is in session.py). Everything here is pure, so that the GPU configuration is
unit-tested on machines without a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from bowrt.bundle import MODEL_FILE, Manifest
from bowrt.errors import OptionError, ProviderUnavailableError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# Short names a caller may use; the full ORT names are accepted too.
PROVIDERS = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT, "trt": TENSORRT}
SHORT = {CPU: "cpu", CUDA: "cuda", TENSORRT: "tensorrt"}
GPU_PROVIDERS = (CUDA, TENSORRT)
# What each provider needs below it for the nodes it cannot run (ORT assigns a
# node to the first provider in the list that implements it).
FALLBACKS = {TENSORRT: (CUDA, CPU), CUDA: (CPU,), CPU: ()}

# TensorRT optimization profile: the batch the engine is tuned for.
TRT_OPT_BATCH = 32


def resolve_provider_names(requested: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Names (short or ORT) -> ORT names in preference order, fallbacks added.

    ``None`` picks the best available: CUDA then CPU when this onnxruntime has
    CUDA, else CPU (TensorRT only when asked for: its engine build takes
    minutes). Every provider named must be available; the fallbacks each one
    needs below it (TensorRT -> CUDA -> CPU) are added when available.
    """
    if requested is None:
        asked = [CUDA] if CUDA in available else [CPU]
    else:
        items = [requested] if isinstance(requested, str) else requested
        if not isinstance(items, Sequence) or not items or not all(isinstance(p, str) for p in items):
            raise OptionError(f"providers must be a name or a list of names out of {sorted(PROVIDERS)}, got {requested!r}")
        asked = []
        for p in items:
            name = PROVIDERS.get(p.lower()) or (p if p.endswith("ExecutionProvider") else None)
            if name is None:
                raise OptionError(f"unknown provider {p!r}; valid: {', '.join(sorted(PROVIDERS))}")
            asked.append(name)
        missing = [p for p in asked if p not in available]
        if missing:
            hint = " (install onnxruntime-gpu: pip install bowrt[gpu])" if any(p in GPU_PROVIDERS for p in missing) else ""
            raise ProviderUnavailableError(
                f"provider {', '.join(SHORT.get(p, p) for p in missing)} asked for but not available in this "
                f"onnxruntime {ort.__version__}{hint}; available: {', '.join(available)}"
            )
    out: list[str] = []
    for p in asked:
        for q in (p, *FALLBACKS.get(p, ())):
            if q not in out and (q == p or q in available):
                out.append(q)
    return out


def _shapes(names: Sequence[str], batch: int, seq: int) -> str:
    # ORT's TensorRT EP format: "input1:d0xd1,input2:d0xd1" (like trtexec --minShapes).
    return ",".join(f"{n}:{batch}x{seq}" for n in names)


def trt_cache_dir(manifest: Manifest, bundle_dir: Path, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where TensorRT engines and timing caches go: next to the bundle, never in it.

    The bundle stays immutable (it is checksummed and copied around); engines are
    specific to a GPU and a TensorRT version, so they are built on the host. A
    subfolder per model sha256 keeps a re-exported bundle at the same path from
    picking up a stale engine.
    """
    base = Path(cache_dir) if cache_dir is not None else bundle_dir.parent / f"{bundle_dir.name}.trt-cache"
    sha = manifest.files.get(MODEL_FILE, {}).get("sha256", "unknown")[:16]
    return base.absolute() / sha


def build_providers(
    requested: str | Sequence[str] | None,
    manifest: Manifest,
    available: Sequence[str],
    bundle_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    device_id: int = 0,
    *,
    max_batch_size: int = 256,
) -> list[tuple[str, dict[str, str]]]:
    """The ORT providers and their options, in order. Pure: touches no file.

    Option values are strings, which every ORT version parses the same way.
    """
    out: list[tuple[str, dict[str, str]]] = []
    for name in resolve_provider_names(requested, available):
        if name == CUDA:
            out.append((CUDA, _cuda_options(manifest, device_id)))
        elif name == TENSORRT:
            out.append((TENSORRT, _tensorrt_options(manifest, Path(bundle_dir), cache_dir, device_id, max_batch_size)))
        else:  # CPU, or a full ORT name we do not tune (e.g. OpenVINOExecutionProvider): ORT's defaults
            out.append((name, {}))
    return out


def _cuda_options(manifest: Manifest, device_id: int) -> dict[str, str]:
    return {
        "device_id": str(device_id),
        # Grow the GPU arena by what is asked, not to the next power of two:
        # batch shapes vary, and power-of-two growth strands up to half of it.
        "arena_extend_strategy": "kSameAsRequested",
        # Copies on the compute stream: separate streams can race (ORT #4829).
        "do_copy_in_default_stream": "1",
        # BERT has no Conv; an exhaustive cuDNN search would only cost time
        # should a foreign graph have one.
        "cudnn_conv_algo_search": "HEURISTIC",
        # The fp32 bundle means fp32: TF32 matmuls would cost ~3 digits of
        # parity with PyTorch. Speed is what the fp16 bundle is for.
        "use_tf32": "0" if manifest.variant == "fp32" else "1",
    }


def _tensorrt_options(manifest: Manifest, bundle_dir: Path, cache_dir: str | os.PathLike[str] | None,
                      device_id: int, max_batch_size: int) -> dict[str, str]:
    cache = str(trt_cache_dir(manifest, bundle_dir, cache_dir))
    inputs, rules = manifest.input_names, manifest.text
    longest = max(rules.passage_max_length, rules.query_max_length)
    opt_seq = max(1, rules.passage_max_length // 2)
    opt_batch = min(TRT_OPT_BATCH, max_batch_size)
    return {
        "device_id": str(device_id),
        "trt_fp16_enable": "True" if manifest.variant == "fp16" else "False",
        # bowrt's int8 is dynamic (DynamicQuantizeLinear/MatMulInteger): TensorRT
        # would need a calibration table for it, so its int8 mode stays off.
        "trt_int8_enable": "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        # One profile covering every shape the batch planner can produce:
        # rows <= max_batch_size, tokens <= the manifest's longest max length.
        "trt_profile_min_shapes": _shapes(inputs, 1, 1),
        "trt_profile_opt_shapes": _shapes(inputs, opt_batch, opt_seq),
        "trt_profile_max_shapes": _shapes(inputs, max_batch_size, longest),
    }
