"""The host's CPU, as the int8 kernels see it, and whether a bundle is exact on it.

ONNX Runtime picks its int8 GEMM kernel by the CPU's instruction sets, and the
kernels differ in how they add up u8 x s8 products: VNNI, AMX and ARM64 accumulate in
int32 (exact), AVX2 and AVX-512 without VNNI add pairs of products in a saturating
int16 (``bowrt/export/int8/isa.py``). An int8 manifest maps each of its graph files to
the ISAs it is exact on (``quantization.graphs``); :func:`select_graph` picks the
fastest one exact here and refuses a host where none is with
:class:`HostUnsupportedError`, so silently wrong vectors are never an outcome.

How the ISA is known, with no dependency beyond the standard library:
- Linux: the ``flags`` (x86) or ``Features`` (ARM) line of ``/proc/cpuinfo``;
- elsewhere (macOS, Windows): ``platform.machine()`` says ARM64 or x86-64; x86 flags
  are not read there, so the ISA is ``"unknown"`` and :func:`int8_kernel_exact` decides
  by running ONNX Runtime's own kernel on a product that saturates an int16 pair.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

from bowrt.bundle import INT8_ISAS, INT32_ISAS, MODEL_FILE, Manifest
from bowrt.errors import HostUnsupportedError
from bowrt.protobuf import field as _field

# The flags that decide the int8 kernel (and a few that decide the float ones).
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")
ARM_MACHINES = ("aarch64", "arm64", "armv8l")
X86_MACHINES = ("x86_64", "amd64", "x64", "i386", "i686")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "CPU part", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_isa(flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """The int8 kernel family ONNX Runtime dispatches to here: one of
    :data:`bowrt.bundle.INT8_ISAS`, or ``"unknown"`` (x86 without readable flags, or
    another architecture). Best first, as MLAS picks it."""
    flags = cpu_flags() if flags is None else flags
    machine = (platform.machine() if machine is None else machine).lower()
    if machine in ARM_MACHINES:
        return "arm64"
    if machine not in X86_MACHINES or not flags:
        return "unknown"
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx_vnni" in flags:
        return "avx_vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "sse"


@functools.lru_cache(maxsize=1)
def int8_kernel_exact() -> bool:
    """Run ONNX Runtime's u8 x s8 GEMM on operands whose adjacent products overflow an
    int16 (255 x 127 + 255 x 127), as a matrix product and as a single row (MLAS has a
    matrix-vector kernel), and say whether it came out exact: True on int32-accumulating
    kernels, False where pairs saturate. A few milliseconds; cached."""
    import numpy as np

    from bowrt.runtime.session import ort_session

    k, n = 64, 16
    w = np.full((k, n), 127, np.int8)
    sess = ort_session(matmul_integer_model(), threads=1)
    for rows in (4, 1):
        a = np.full((rows, k), 255, np.uint8)
        got = sess.run(None, {"A": a, "B": w})[0]
        if not np.array_equal(got, a.astype(np.int64) @ w.astype(np.int64)):
            return False
    return True


def matmul_integer_model() -> bytes:
    """The ONNX model ``Y = MatMulInteger(A: uint8, B: int8)`` (int32), serialized by
    hand: the runtime does not depend on the ``onnx`` package (tests parse it with onnx)."""
    def value(name: str, elem_type: int, dims: str) -> bytes:  # ValueInfoProto: a 2-D tensor of symbolic dims
        shape = b"".join(_field(1, _field(2, d.encode())) for d in dims)
        return _field(1, name.encode()) + _field(2, _field(1, _field(1, elem_type) + _field(2, shape)))

    node = _field(1, b"A") + _field(1, b"B") + _field(2, b"Y") + _field(4, b"MatMulInteger")
    graph = (_field(1, node) + _field(2, b"int8_probe")  # uint8 2, int8 3, int32 6
             + _field(11, value("A", 2, "MK")) + _field(11, value("B", 3, "KN")) + _field(12, value("Y", 6, "MN")))
    return _field(1, 8) + _field(7, graph) + _field(8, _field(1, b"") + _field(2, 13))  # IR 8, opset 13


def describe() -> dict[str, Any]:
    """What ``bowrt info``, ``Encoder.info``, the server's ``/info`` and the bench report.
    ``int8_accumulation`` is measured on ONNX Runtime's kernel (:func:`int8_kernel_exact`),
    not inferred from the flags (an emulator or a hypervisor can report flags the
    kernel dispatch does not see)."""
    flags = cpu_flags()
    try:
        accumulation = "int32" if int8_kernel_exact() else "int16 pairs (saturating)"
    except ImportError:  # the base install has onnxruntime; `bowrt verify` may run without it
        accumulation = "unknown (onnxruntime not installed)"
    return {
        "machine": platform.machine(),
        "int8_isa": int8_isa(flags),
        "int8_accumulation": accumulation,
        "flags": sorted(f for f in REPORTED_FLAGS if f in flags),
        "isa_source": "/proc/cpuinfo" if flags else "platform.machine()",
    }


def summary() -> str:
    """One line: ``x86_64, int8 ISA amx, int32 accumulation``."""
    h = describe()
    return f"{h['machine']}, int8 ISA {h['int8_isa']}, {h['int8_accumulation']} accumulation"


def graphs(manifest: Manifest) -> dict[str, tuple[str, ...]]:
    """The bundle's graph files, fastest first, each with the ISAs it is exact on."""
    if manifest.variant != "int8":
        return {MODEL_FILE: INT8_ISAS}
    listed = (manifest.quantization or {}).get("graphs")
    if isinstance(listed, dict) and listed:
        return {str(f): tuple(v) for f, v in listed.items()}
    return {MODEL_FILE: INT32_ISAS}  # bowrt < 0.2: one u8 x s8 graph, exact on int32 kernels only


def exact_isas(manifest: Manifest) -> tuple[str, ...]:
    """The ISAs on which some graph of the bundle is exact."""
    isas = {i for v in graphs(manifest).values() for i in v}
    return tuple(i for i in INT8_ISAS if i in isas)


def select_graph(manifest: Manifest) -> str:
    """The graph file to run here: the first (fastest) one exact on this host. A graph
    exact on every ISA needs no look at the host; one exact only on int32-accumulating
    ISAs runs where ONNX Runtime's kernel is measured to accumulate in int32
    (:func:`int8_kernel_exact`): the flags name the ISA, the measurement decides.
    Where none is exact: :class:`HostUnsupportedError`, never silently wrong vectors."""
    table = graphs(manifest)
    for name, isas in table.items():
        if set(isas) >= set(INT8_ISAS) or (set(isas) <= set(INT32_ISAS) and int8_kernel_exact()):
            return name
    raise HostUnsupportedError(
        f"this int8 bundle is exact only on {', '.join(exact_isas(manifest))}, and this host's int8 kernel "
        f"({int8_isa()}) adds pairs of u8 x s8 products in a saturating int16 (measured), which this "
        "bundle's weights can overflow: its vectors would be silently wrong. Re-export it with "
        "bowrt >= 0.2 (it adds a graph exact on every ISA), or use its fp32 bundle."
    )


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads are not counted).

    ORT's matmuls gain nothing from a core's second hyper-thread and lose to
    the contention, so one intra-op thread per physical core. Read from
    ``/proc/cpuinfo`` (distinct ``physical id``/``core id`` pairs of the CPUs in
    our affinity mask) and capped by a cgroup v2 CPU quota; ``os.cpu_count()``
    where that information is missing (macOS, Windows).
    """
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            blocks = f.read().split("\n\n")
    except OSError:
        blocks = []
    for block in blocks:
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "processor" not in fields or "core id" not in fields:
            continue
        if allowed is not None and fields["processor"].isdigit() and int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields["core id"]))
    n = len(cores) or (len(allowed) if allowed else None) or os.cpu_count() or 1
    try:  # a container limited with --cpus: "quota period" or "max period"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)
