"""Is int8 exact on ARM64, and does a bundle pass its self-check there?

Answer: docs/int8.md, "ARM64 under emulation".

    python benchmarks/studies/arm64_qemu.py ROOTFS [--bundle DIR ...] [--cpu max --cpu neoverse-n1 ...]
                                            [--texts 8] [-o out.json]

Runs, in an aarch64 Debian rootfs under ``qemu-aarch64-static`` (user-mode emulation), with
aarch64 wheels of Python, onnxruntime, numpy and tokenizers, and this checkout's ``bowrt``:

- the int8 kernel probe: ``host.int8_kernel_exact()``, ``host.int8_isa()``, ``host.describe()``;
- for each bundle, ``Encoder(bundle, "cpu", check_numerics="always")``: the graph picked, the
  self-check's figures, and the vectors of ``--texts`` probe queries and as many probe passages,
  compared with the same vectors computed natively on this (x86) host.

Once per ``--cpu`` (a qemu CPU model: ``max`` has dot product, i8mm and SVE; ``neoverse-n1`` dot
product only; ``cortex-a53`` plain NEON), so that each of ONNX Runtime's ARM64 int8 kernel
families runs. The bundles, this script and ``bowrt/`` are copied into ``ROOTFS/opt/bowrt-study``
(the bundles are only read); ``/proc`` is mounted there for the run. ``/sys`` must *not* be
mounted: with it, ORT's cpuinfo library parses the x86 host's ``/proc/cpuinfo`` and the process
dies of SIGSEGV; without it ORT reads the CPU features from ``getauxval(AT_HWCAP/AT_HWCAP2)``,
which qemu sets from the CPU model. Run as root (chroot, mount).

Prepare the rootfs once (Debian 12 host, as root; what was run for the docs):

    apt-get install -y debootstrap qemu-user-static
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc     # where not mounted
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \\
        bookworm /opt/arm64root http://deb.debian.org/debian
    cp /usr/bin/qemu-aarch64-static /opt/arm64root/usr/bin/
    pip download --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \\
        --platform manylinux_2_28_aarch64 --only-binary=:all: --python-version 3.11 --implementation cp \\
        -d /opt/arm64root/opt/wheels onnxruntime==1.32.0 numpy==2.4.6 tokenizers==0.23.3
    mount -t proc proc /opt/arm64root/proc
    chroot /opt/arm64root /usr/bin/python3 -m venv /opt/venv
    chroot /opt/arm64root /opt/venv/bin/pip install --no-index --find-links /opt/wheels \\
        onnxruntime numpy tokenizers huggingface_hub
    umount /opt/arm64root/proc

(The binfmt registration, flag F, is needed by debootstrap's second stage only: this script calls
``/usr/bin/qemu-aarch64-static`` inside the rootfs explicitly.) Emulation is evidence of the
arithmetic (qemu decodes ORT's real NEON/UDOT/UMMLA instructions), never of speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

ROOT = Path(__file__).resolve().parents[2]
STUDY = "/opt/bowrt-study"  # inside the rootfs
GUEST_PYTHON = "/opt/venv/bin/python"
QEMU = "/usr/bin/qemu-aarch64-static"
DEFAULT_BUNDLES = ("bundles/minilm/int8", "bundles/minilm/fp32", "/tmp/scratch/minilm-int8/int8")
# AT_HWCAP / AT_HWCAP2 bits (linux/arch/arm64/include/uapi/asm/hwcap.h) that decide ORT's ARM64 kernels.
HWCAP = {"asimd": 1 << 1, "asimddp": 1 << 20, "sve": 1 << 22}
HWCAP2 = {"i8mm": 1 << 13, "svei8mm": 1 << 9, "bf16": 1 << 14, "sme": 1 << 23}


def probe_texts(n: int) -> tuple[list[str], list[tuple[str, str]]]:
    from bowrt.export.probes import load_text_set  # numpy and the standard library only

    s = load_text_set("probes")
    return list(s.queries[:n]), [tuple(p) for p in s.passages[:n]]


def encode_bundle(bundle: str, n: int, twin: bool = False) -> dict[str, Any]:
    """Load with the self-check forced, then encode the probe texts (un-normalized). ``twin``:
    as a host whose u8 x s8 kernel saturates would (the u8 x u8 graph), as int8_host.py does."""
    from bowrt import Encoder
    from bowrt.runtime import host

    real = host.int8_kernel_exact
    if twin:
        host.int8_kernel_exact = lambda: False
    try:
        t0 = time.perf_counter()
        enc = Encoder(bundle, "cpu", check_numerics="always")
        load_s = time.perf_counter() - t0
    finally:
        host.int8_kernel_exact = real
    queries, passages = probe_texts(n)
    t0 = time.perf_counter()
    vecs = np.concatenate([enc.encode_queries(queries, normalize=False),
                           enc.encode_passages(passages, normalize=False)])
    return {"variant": enc.variant, "graph_file": enc.graph_file, "graphs": list(host.graphs(enc.manifest)),
            "threads": enc.threads, "numerics": enc.numerics, "load_s": load_s,
            "encode_s": time.perf_counter() - t0, "vectors": vecs.astype(np.float32)}


def encode_all(bundles: list[str], n: int) -> dict[str, Any]:
    """Each bundle as this host picks its graph and, for an int8 bundle with a twin, the twin
    forced (``BUNDLE#twin``). A refusal (NumericsError, HostUnsupportedError) is a result."""
    out: dict[str, Any] = {}
    for b in bundles:
        for twin in (False, True):
            key = f"{b}#twin" if twin else b
            if twin and len(out[b].get("graphs", ())) < 2:
                break
            try:
                out[key] = encode_bundle(b, n, twin)
            except Exception as e:  # noqa: BLE001
                out[key] = {"error": f"{type(e).__name__}: {e}"}
    return out


def gemm_check() -> dict[str, Any]:
    """ORT's u8 x s8 ``MatMulInteger`` on MiniLM's GEMM shapes against numpy's int64: full-range
    random operands and the worst case (all 255 x all 127 / all -128), matrix and single row."""
    from bowrt.runtime import host
    from bowrt.runtime.session import ort_session

    sess, rng = ort_session(host.matmul_integer_model(), threads=1), np.random.default_rng(0)
    worst = cases = 0
    for m, k, nn in ((1, 384, 1536), (64, 384, 1536), (64, 1536, 384), (7, 384, 384)):
        for kind in ("random", "max", "min"):
            a = rng.integers(0, 256, (m, k), dtype=np.uint8) if kind == "random" else np.full((m, k), 255, np.uint8)
            w = {"random": rng.integers(-128, 128, (k, nn), dtype=np.int8),
                 "max": np.full((k, nn), 127, np.int8), "min": np.full((k, nn), -128, np.int8)}[kind]
            got = sess.run(None, {"A": a, "B": w})[0].astype(np.int64)
            worst = max(worst, int(np.abs(got - a.astype(np.int64) @ w.astype(np.int64)).max()))
            cases += 1
    return {"cases": cases, "exact": worst == 0, "max_abs_error": worst}


def hwcaps() -> dict[str, bool]:
    import ctypes

    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    hw, hw2 = libc.getauxval(16), libc.getauxval(26)  # AT_HWCAP, AT_HWCAP2
    return {**{k: bool(hw & b) for k, b in HWCAP.items()}, **{k: bool(hw2 & b) for k, b in HWCAP2.items()}}


def worker(bundles: list[str], n: int) -> None:
    """Inside the emulator: versions, the probe, each bundle; one ``RESULT {json}`` line."""
    import platform

    t0 = time.perf_counter()
    import onnxruntime as ort
    import tokenizers

    from bowrt.runtime import host

    out: dict[str, Any] = {"import_s": time.perf_counter() - t0, "machine": platform.machine(),
                           "python": platform.python_version(), "onnxruntime": ort.__version__,
                           "numpy": np.__version__, "tokenizers": tokenizers.__version__,
                           "qemu_cpu": os.environ.get("QEMU_CPU", "max"), "hwcaps": hwcaps()}
    t0 = time.perf_counter()
    out["int8_kernel_exact"] = host.int8_kernel_exact()
    out["probe_s"] = time.perf_counter() - t0
    out["int8_isa"], out["describe"], out["gemm_check"] = host.int8_isa(), host.describe(), gemm_check()
    out["bundles"] = encode_all(bundles, n)
    for r in out["bundles"].values():
        if "vectors" in r:
            r["vectors"] = r["vectors"].tolist()
    print("RESULT " + json.dumps(out), flush=True)


def stage(rootfs: Path, bundles: list[Path]) -> dict[str, str]:
    """Copy bowrt, this script and the bundles into the rootfs; returns host path -> guest path."""
    dest = rootfs / STUDY.lstrip("/")
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "bowrt", dest / "bowrt", ignore=ignore)
    studies = dest / "benchmarks" / "studies"
    studies.mkdir(parents=True)
    for f in (Path(__file__).resolve(), Path(__file__).resolve().with_name("_checkout.py")):
        shutil.copy2(f, studies / f.name)
    guest = {}
    for i, b in enumerate(bundles):
        name = f"{i}-{b.parent.name}-{b.name}"
        shutil.copytree(b, dest / "bundles" / name)
        guest[str(b)] = f"{STUDY}/bundles/{name}"
    return guest


def run_guest(rootfs: Path, cpu: str, guest_bundles: list[str], n: int, timeout: int) -> dict[str, Any]:
    """One emulated run: ``chroot ROOTFS qemu-aarch64-static -cpu CPU python arm64_qemu.py --worker``."""
    cmd = ["nice", "-n", "19", "chroot", str(rootfs), QEMU, "-cpu", cpu, GUEST_PYTHON,
           f"{STUDY}/benchmarks/studies/arm64_qemu.py", "--texts", str(n), "--worker", *guest_bundles]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "QEMU_CPU": cpu,
           "BOWRT_CACHE_DIR": f"{STUDY}/cache", "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        return {"qemu_cpu": cpu, "error": f"exit {p.returncode}", "stderr_tail": p.stderr[-2000:], "wall_s": wall}
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_s"] = wall
    out["stderr_notes"] = sorted({ln.strip() for ln in p.stderr.splitlines() if ln.strip()})[:8]
    return out


def native(bundles: list[Path], n: int) -> dict[str, Any]:
    """The same bundles and texts on this host, natively (x86)."""
    from bowrt.runtime import host

    return {"describe": host.describe(), "gemm_check": gemm_check(),
            "bundles": encode_all([str(b) for b in bundles], n)}


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-30)
    return {"max_abs_diff": float(np.abs(a64 - b64).max()), "max_abs": float(np.abs(b64).max()),
            "min_cosine": float(cos.min()), "one_minus_min_cosine": float(1 - cos.min()),
            "bit_identical": bool(np.array_equal(a, b))}


def compare(runs: list[dict[str, Any]], here: dict[str, Any], guest: dict[str, str]) -> None:
    """Adds ``vs_x86`` to each emulated bundle result and ``vs_graph_here`` to each twin (against
    the graph the host picked, same run); drops the vectors from the output."""
    for res in [r.get("bundles", {}) for r in runs] + [here["bundles"]]:
        for key, r in res.items():
            base = res.get(key.removesuffix("#twin"))
            if key.endswith("#twin") and base and "vectors" in r and "vectors" in base:
                r["vs_graph_here"] = agreement(np.asarray(r["vectors"], np.float32),
                                               np.asarray(base["vectors"], np.float32))
    for run in runs:
        for host_path, g in guest.items():
            for suffix in ("", "#twin"):
                r, x = run.get("bundles", {}).get(g + suffix), here["bundles"].get(host_path + suffix)
                if r is not None and x is not None and "vectors" in r and "vectors" in x:
                    r["vs_x86"] = agreement(np.asarray(r.pop("vectors"), np.float32), x["vectors"])
    for res in [r.get("bundles", {}) for r in runs] + [here["bundles"]]:
        for r in res.values():
            r.pop("vectors", None)


def mounted_proc(rootfs: Path) -> bool:
    """Mount ``ROOTFS/proc`` unless it is; True where this call mounted it."""
    proc = rootfs / "proc"
    if os.path.ismount(proc):
        return False
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    return True


def bundle_line(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"  {name}: {r['error']}"
    nan = float("nan")
    nm, v, t = r["numerics"] or {}, r.get("vs_x86"), r.get("vs_graph_here")
    line = (f"  {name}: {r['variant']}, graph {r['graph_file']}, load+check {r['load_s']:.1f} s; self-check min cos "
            f"{nm.get('min_cosine_vs_pytorch', nan):.6f} vs PyTorch (gate {nm.get('gate')}), "
            f"{nm.get('min_cosine_vs_export_host', nan):.7f} vs export host (gate {nm.get('host_gate')})")
    for label, a in (("vs x86 here", v), ("vs the graph picked, same host", t)):
        if a:
            line += (f"\n      {label}: max|diff| {a['max_abs_diff']:.3g} (max|v| {a['max_abs']:.3g}), "
                     f"1 - min cos {a['one_minus_min_cosine']:.3g}{', bit-identical' if a['bit_identical'] else ''}")
    return line


def summary(out: dict[str, Any]) -> None:
    x = out["x86"]
    h, g = x["describe"], x["gemm_check"]
    print(f"\nx86 host (native): int8 ISA {h['int8_isa']} ({h['int8_accumulation']}); flags {', '.join(h['flags'])}; "
          f"MatMulInteger exact={g['exact']}")
    for name, r in x["bundles"].items():
        print(bundle_line(name, r))
    for run in out["runs"]:
        if "error" in run:
            print(f"\nqemu -cpu {run['qemu_cpu']}: FAILED {run['error']}\n{run.get('stderr_tail', '')}")
            continue
        caps, g = ",".join(k for k, v in run["hwcaps"].items() if v), run["gemm_check"]
        print(f"\nqemu -cpu {run['qemu_cpu']} (hwcaps {caps}): {run['machine']}, Python {run['python']}, "
              f"onnxruntime {run['onnxruntime']}, numpy {run['numpy']}, tokenizers {run['tokenizers']}; "
              f"run {run['wall_s']:.0f} s")
        print(f"  probe: int8_kernel_exact={run['int8_kernel_exact']}, int8_isa={run['int8_isa']}, "
              f"accumulation {run['describe']['int8_accumulation']} ({run['probe_s']:.2f} s); MatMulInteger on "
              f"{g['cases']} full-range cases exact={g['exact']} (max error {g['max_abs_error']})")
        for name, r in run["bundles"].items():
            print(bundle_line(name, r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rootfs", type=Path, nargs="?", help="the prepared aarch64 rootfs (see above)")
    ap.add_argument("--worker", nargs="+", metavar="GUEST_BUNDLE", help=argparse.SUPPRESS)  # inside the emulator
    ap.add_argument("--bundle", type=Path, action="append", help=f"default: those of {DEFAULT_BUNDLES} that exist")
    ap.add_argument("--cpu", action="append", help="qemu -cpu model(s); default: max, neoverse-n1, cortex-a53")
    ap.add_argument("--texts", type=int, default=8, help="probe queries, and as many passages, compared with x86")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per emulated run")
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.texts)
    if args.rootfs is None:
        ap.error("the rootfs is required")
    defaults = [Path(b) if Path(b).is_absolute() else ROOT / b for b in DEFAULT_BUNDLES]
    bundles = [b.absolute() for b in args.bundle] if args.bundle else [p for p in defaults if p.is_dir()]
    t0 = time.perf_counter()
    guest = stage(args.rootfs, bundles)
    out: dict[str, Any] = {"rootfs": str(args.rootfs), "bundles": [str(b) for b in bundles],
                           "qemu": subprocess.run([QEMU, "--version"], capture_output=True, text=True)
                           .stdout.splitlines()[0], "stage_s": time.perf_counter() - t0}
    unmount = mounted_proc(args.rootfs)
    try:
        out["runs"] = [run_guest(args.rootfs, cpu, list(guest.values()), args.texts, args.timeout)
                       for cpu in args.cpu or ["max", "neoverse-n1", "cortex-a53"]]
    finally:
        if unmount:
            subprocess.run(["umount", str(args.rootfs / "proc")], check=False)
    os.environ.setdefault("BOWRT_CACHE_DIR", str(args.rootfs / STUDY.lstrip("/") / "cache-x86"))  # not ~/.cache
    out["x86"] = native(bundles, args.texts)
    compare(out["runs"], out["x86"], guest)
    out["total_s"] = time.perf_counter() - t0
    print(json.dumps(out, default=str))
    summary(out)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
