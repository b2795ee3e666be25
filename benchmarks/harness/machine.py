"""The machine and its physical limits: description, package versions, GEMM ceilings, FLOP counts.

A speed figure means little without the ceiling it sits under. In the same run
as the systems, we time the operation that dominates a BERT pass, a GEMM of
the model's own FFN shape ``[tokens, hidden] x [hidden, intermediate]``: fp32
through numpy, torch and ONNX Runtime (MatMul), bf16 through torch (AMX where
the CPU has it) and int8 through ONNX Runtime's ``MatMulInteger`` (u8 x s8,
weights constant as in a quantized model). Each system's achieved FLOP rate is
then reported as a fraction of the best ceiling of its precision.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from typing import Any, Callable

import numpy as np

from benchmarks.harness.spec import version

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "sve")
PACKAGES = ("bowrt", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "tokenizers", "torch", "transformers",
            "sentence-transformers", "optimum", "optimum-onnx", "fastembed", "huggingface-hub", "matplotlib")


# --- description -----------------------------------------------------------------------------
def _cpuinfo() -> dict[str, str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        return {}
    out = {}
    for line in block.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    keep = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)", "L2 cache", "L3 cache",
            "Hypervisor vendor", "CPU max MHz", "NUMA node(s)")
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keep:
            out[key.strip()] = value.strip()
    return out


def describe() -> dict[str, Any]:
    """Platform, CPU model and the SIMD/matrix flags that decide which kernels run, memory, providers."""
    from bowrt.runtime import host
    from bowrt.runtime.host import physical_cores

    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    mem_kb = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": info.get("model name") or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "lscpu": _lscpu(),
        "memory_gb": round(mem_kb / 2**20, 1) if mem_kb else None,
        "onnxruntime_providers": providers,
        # The int8 kernel family ONNX Runtime runs here, and how it accumulates (measured).
        "int8": host.describe(),
    }


def versions() -> dict[str, str | None]:
    """Installed versions; bowrt's from the code that runs (an editable install's metadata keeps
    the version it was installed at)."""
    import bowrt

    return {p: bowrt.__version__ if p == "bowrt" else version(p) for p in PACKAGES}


# --- FLOPs ------------------------------------------------------------------------------------
def encoder_flops(config: dict[str, Any], lengths: list[int]) -> int:
    """FLOPs of a BERT encoder forward over sequences of ``lengths`` tokens (no padding).

    Per layer and sequence of L tokens: the linear layers do ``2 * P * L`` with
    ``P = 4 H^2 + 2 H I`` weights (Q, K, V, output; FFN up and down), and
    attention does ``4 * L^2 * H`` (scores ``Q K^T`` and the weighted sum of V).
    Embeddings, layer norms, softmax and biases are left out (under 1%).
    """
    h = int(config["hidden_size"])
    inter = int(config.get("intermediate_size", 4 * h))
    layers = int(config["num_hidden_layers"])
    p = 4 * h * h + 2 * h * inter
    return layers * sum(2 * p * n + 4 * n * n * h for n in lengths)


# --- GEMM ceilings -----------------------------------------------------------------------------
def _best_rate(fn: Callable[[], Any], ops: float, min_s: float) -> float:
    """Best ops/second of ``fn`` over repeated calls for at least ``min_s`` (after one warm call)."""
    fn()
    best = float("inf")
    t_end = time.perf_counter() + min_s
    n = 0
    while n < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return ops / best


def _ort_matmul(m: int, k: int, n: int, threads: int, integer: bool) -> Callable[[], Any]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        a = rng.integers(0, 255, size=(m, k), dtype=np.uint8)
        b = numpy_helper.from_array(rng.integers(-127, 127, size=(k, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "gemm", [helper.make_tensor_value_info("A", a_type, [m, k])],
        [helper.make_tensor_value_info("Y", y_type, [m, n])], initializer=[b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    from bowrt.runtime.session import ort_session

    sess = ort_session(model.SerializeToString(), threads=threads, disabled=())
    return lambda: sess.run(None, {"A": a})


def gemm_ceilings(config: dict[str, Any], threads: int, *, tokens: int = 2048, min_s: float = 1.0) -> dict[str, Any]:
    """Measured GEMM rates (GFLOP/s or GOP/s) at the model's FFN shape, per library and precision."""
    m, k, n = tokens, int(config["hidden_size"]), int(config.get("intermediate_size", 4 * int(config["hidden_size"])))
    ops = 2.0 * m * k * n
    out: dict[str, Any] = {"shape_mkn": [m, k, n], "threads": threads, "fp32": {}, "bf16": {}, "int8": {}, "errors": {}}
    rng = np.random.default_rng(0)
    a32, b32 = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)

    def attempt(prec: str, lib: str, make: Callable[[], Callable[[], Any]]) -> None:
        try:
            out[prec][lib] = round(_best_rate(make(), ops, min_s) / 1e9, 1)
        except Exception as e:  # a missing library is a gap in the table, not a failed run
            out["errors"][f"{prec}/{lib}"] = f"{type(e).__name__}: {e}"

    try:  # numpy's BLAS threads, held to `threads` while it is timed
        from threadpoolctl import threadpool_limits

        blas_limit: Any = threadpool_limits(threads)
    except ImportError:
        blas_limit = None
    out["numpy_blas_threads_limited"] = blas_limit is not None

    def torch_mm(dtype: str) -> Callable[[], Callable[[], Any]]:
        def make() -> Callable[[], Any]:
            import torch

            torch.set_num_threads(threads)
            ta, tb = torch.from_numpy(a32).to(getattr(torch, dtype)), torch.from_numpy(b32).to(getattr(torch, dtype))
            return lambda: torch.mm(ta, tb)

        return make

    attempt("fp32", "numpy", lambda: (lambda: a32 @ b32))
    if blas_limit is not None:
        blas_limit.restore_original_limits()
    attempt("fp32", "torch", torch_mm("float32"))
    attempt("fp32", "onnxruntime", lambda: _ort_matmul(m, k, n, threads, integer=False))
    attempt("bf16", "torch", torch_mm("bfloat16"))
    attempt("int8", "onnxruntime", lambda: _ort_matmul(m, k, n, threads, integer=True))
    out["best"] = {p: max(out[p].values()) if out[p] else None for p in ("fp32", "bf16", "int8")}
    return out


def ceiling_for(ceilings: dict[str, Any], precision: str) -> float | None:
    """The best measured rate (GFLOP/s) of a system's precision; fp16 on CPU has none."""
    return ceilings.get("best", {}).get(precision)
