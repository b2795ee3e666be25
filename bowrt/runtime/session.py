"""One ONNX Runtime session: session options, the one session builder, feeds, IO binding.

Which providers are asked for, with which options, is providers.py. After the session
is built, :class:`Session` checks that the first asked-for provider really took (ORT's
Python API otherwise falls back to CPU with only a log line). :func:`ort_session` is the
only place in bowrt, its benchmarks and scripts that builds an ``InferenceSession``.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bowrt.bundle import MODEL_FILE, Manifest
from bowrt.errors import BowrtError, BundleFormatError, ProviderUnavailableError
from bowrt.runtime import twin
from bowrt.runtime.providers import CPU, GPU_PROVIDERS, SHORT, TENSORRT

# The graph inputs the runtime knows how to feed.
FEEDABLE = ("input_ids", "attention_mask", "token_type_ids")
ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
ORT_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}

# ORT graph optimizers the runtime turns off on CPU for a bundle from before bowrt 0.3,
# whose manifest does not say (``Manifest.runtime["cpu_disabled_optimizers"]`` does
# since). The export splits SkipLayerNormalization into Add + LayerNormalization for the
# CPU variants, because ORT's CPU SkipLayerNormalization kernel is 2.4-2.8x slower than
# the two (bowrt/export/optimize.py); turning SkipLayerNormFusion off keeps ORT from
# fusing them back. On CUDA/TensorRT nothing is turned off, so ORT re-fuses for its GPU
# kernel. The export writes the contract (bowrt/bundle.py: CPU_REWRITE_CONTRACT).
LEGACY_CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)

def disabled_optimizers(provider_names: Sequence[str], manifest: Manifest | None = None) -> list[str]:
    """The ORT optimizers to turn off for a session whose providers are ``provider_names``:
    on CPU, what the bundle's manifest says (the export's rewrite contract), else none."""
    if not provider_names or provider_names[0] != CPU:
        return []
    if manifest is None:
        return list(LEGACY_CPU_DISABLED_OPTIMIZERS)
    return list(manifest.runtime.get("cpu_disabled_optimizers", LEGACY_CPU_DISABLED_OPTIMIZERS))


def session_options(threads: int | None, cpu_mem_arena: bool = True, *, spinning: bool = True,
                    profile_prefix: str | None = None) -> ort.SessionOptions:
    """The runtime's session options. ``spinning=False`` stops idle intra-op threads from
    busy-waiting (benchmarks that alternate sessions call by call); ``profile_prefix`` turns
    ORT's profiler on (the scripts that read kernel times)."""
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1  # one linear graph: nothing to run side by side
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Memory patterns plan buffers for one input shape; every batch has its own.
    so.enable_mem_pattern = False
    # CPU arena: on by default. ORT's BFC arena keeps its high-water mark for the
    # life of the session (ORT #11627), so it is only safe because every batch is
    # bounded by the Encoder's token budget. Measured (int8 twin, budget 2048, 4
    # passes of random sizes): peak RSS 431 -> 436 MB with the arena, 835 -> 931 MB
    # and still growing without it (malloc keeps freed blocks per thread), and
    # 8-45% more passages/s with it.
    so.enable_cpu_mem_arena = cpu_mem_arena
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def ort_session(
    model: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    providers: Sequence[tuple[str, dict[str, str]]] = ((CPU, {}),),
    manifest: Manifest | None = None,
    disabled: Sequence[str] | None = None,
    cpu_mem_arena: bool = True,
    spinning: bool = True,
    profile_prefix: str | None = None,
) -> ort.InferenceSession:
    """The one place an ONNX Runtime session is built: the runtime, the export's parity
    gate and int8 search, the bench peers and the scripts all come here, so that what
    they measure is what the runtime runs.

    ``model``: a path or serialized bytes. ``providers``: ``(name, options)`` pairs, as
    :func:`build_providers` gives. The optimizers turned off are ``disabled`` when given,
    else the bundle's CPU rewrite contract (:func:`disabled_optimizers`): pass the
    ``manifest``, or nothing for a graph the export is still writing (the current
    contract). Raises what ORT raises; :class:`Session` turns that into a BundleError.
    """
    names = [n for n, _ in providers]
    off = list(disabled) if disabled is not None else disabled_optimizers(names, manifest)
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(
        src, sess_options=session_options(threads, cpu_mem_arena, spinning=spinning, profile_prefix=profile_prefix),
        providers=names, provider_options=[o for _, o in providers], disabled_optimizers=off,
    )


class Session:
    """The ORT session plus what the runtime needs to feed it.

    ``run(input_ids, attention_mask)`` -> ``[rows, hidden]`` float32 on the host.
    On CUDA/TensorRT it uses IO binding: inputs are bound from host memory, the
    output is written into one preallocated device buffer sized for the largest
    batch (bound per run with the batch's shape), and only ``[rows, hidden]``
    is copied back.
    """

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        providers: list[tuple[str, dict[str, str]]],
        *,
        explicit: bool,
        threads: int,
        device_id: int = 0,
        max_batch_size: int = 256,
        cpu_mem_arena: bool = True,
        io_binding: bool | None = None,
        model_file: str = MODEL_FILE,
    ):
        for name, opts in providers:
            if name == TENSORRT:
                Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            # A file of the bundle, or a graph derived from one at load (an int8 bundle's u8 twin).
            with twin.open_graph(bundle_dir, manifest, model_file) as model:
                self.session = ort_session(model, threads=threads, providers=providers,
                                           manifest=manifest, cpu_mem_arena=cpu_mem_arena)
        except BowrtError:
            raise
        except Exception as e:  # ORT raises its own pybind exception types
            raise BundleFormatError(
                f"onnxruntime {ort.__version__} could not load {str(bundle_dir / model_file)!r} "
                f"(graph opset {manifest.opset}; the int8 graph needs onnxruntime >= 1.23): {e}"
            ) from e
        self.providers = self.session.get_providers()
        wanted = providers[0][0]
        if self.providers[0] != wanted:
            msg = (
                f"provider {SHORT.get(wanted, wanted)} did not take (ORT is running {self.providers}; "
                f"available: {ort.get_available_providers()}): check the CUDA/cuDNN/TensorRT libraries "
                "onnxruntime needs (ORT's log above says which failed to load)"
            )
            if explicit:
                raise ProviderUnavailableError(msg)
            warnings.warn(msg + "; running on " + self.providers[0], RuntimeWarning, stacklevel=3)
        self.provider = self.providers[0]
        self.device_id = device_id
        self.hidden = manifest.hidden_size
        self._feeds = self._plan_feeds()
        out = self._check_output(manifest.output_name)
        self.output_name = out.name
        self._out_dtype = ORT_FLOAT_TYPES.get(out.type, np.float32)
        if io_binding is None:
            io_binding = self.provider in GPU_PROVIDERS
        self._device = ("cuda" if self.provider in GPU_PROVIDERS else "cpu") if io_binding else None
        self._lock = threading.Lock()
        self._out_buf = None
        if self._device:
            # Sized once for the largest batch; each run binds a [rows, hidden]
            # view of its start, so no shape allocates a new output.
            self._out_buf = ort.OrtValue.ortvalue_from_shape_and_type(
                (max_batch_size, self.hidden), self._out_dtype, self._device, device_id
            )

    def _check_output(self, name: str) -> Any:  # an onnxruntime.NodeArg
        outs = self.session.get_outputs()
        names = [o.name for o in outs]
        if name not in names:
            raise BundleFormatError(f"the graph has no output {name!r} (it has {names})")
        out = outs[names.index(name)]
        static_dim_wrong = len(out.shape) == 2 and isinstance(out.shape[1], int) and out.shape[1] != self.hidden
        if len(out.shape) != 2 or static_dim_wrong:
            raise BundleFormatError(
                f"output {out.name!r} has shape {out.shape}; the runtime expects [batch, {self.hidden}] "
                "(pooling inside the graph, hidden size as in the manifest)"
            )
        return out

    def _plan_feeds(self) -> list[tuple[str, Any]]:
        feeds = []
        for spec in self.session.get_inputs():
            if spec.name not in FEEDABLE:
                raise BundleFormatError(f"the graph wants input {spec.name!r}; the runtime feeds only {', '.join(FEEDABLE)}")
            if spec.type not in ORT_INT_TYPES:
                raise BundleFormatError(f"input {spec.name!r} is {spec.type}; expected tensor(int64)")
            feeds.append((spec.name, ORT_INT_TYPES[spec.type]))
        if "input_ids" not in [name for name, _ in feeds]:
            raise BundleFormatError("the graph has no input_ids input")
        return feeds

    def feeds(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        src = {"input_ids": input_ids, "attention_mask": attention_mask}
        out = {}
        for name, dtype in self._feeds:
            # token_type_ids of a foreign graph: segment 0 everywhere.
            arr = src[name] if name in src else np.zeros_like(input_ids)
            out[name] = arr if arr.dtype == dtype else arr.astype(dtype)
        return out

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = self.feeds(input_ids, attention_mask)
        rows = input_ids.shape[0]
        if self._device is None:
            out = self.session.run([self.output_name], feeds)[0]
        else:
            out = self._run_bound(feeds, rows)
        if out.shape != (rows, self.hidden):
            raise BundleFormatError(f"the graph returned shape {out.shape}, expected {(rows, self.hidden)}")
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def _run_bound(self, feeds: dict[str, np.ndarray], rows: int) -> np.ndarray:
        # The output buffer is shared: one bound run at a time (the GPU runs one
        # at a time anyway; the batcher feeds it from a single thread).
        with self._lock:
            if rows > self._out_buf.shape()[0]:  # larger than planned: grow once
                self._out_buf = ort.OrtValue.ortvalue_from_shape_and_type(
                    (rows, self.hidden), self._out_dtype, self._device, self.device_id
                )
            io = self.session.io_binding()
            for name, arr in feeds.items():
                io.bind_cpu_input(name, np.ascontiguousarray(arr))
            io.bind_output(
                self.output_name, self._device, self.device_id, self._out_dtype,
                (rows, self.hidden), self._out_buf.data_ptr(),
            )
            self.session.run_with_iobinding(io)
            return io.copy_outputs_to_cpu()[0]
