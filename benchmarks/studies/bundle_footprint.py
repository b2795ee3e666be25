"""What does shipping and starting a bundle cost (issue 27): its size, the time from load to
first vector, the self-check with and without its cached verdict, and peak memory?

Answer: docs/bundle.md, "Size, cold start and memory".

    python benchmarks/studies/bundle_footprint.py LABEL=BUNDLE [LABEL=BUNDLE ...] [--runs 5] [-o out.json]

Each run is a fresh Python process (the cold start a user's app sees), so nothing is shared
between runs but the OS page cache (every bundle is read once before the first run, so
all of them start warm alike). Runs alternate bundle by bundle and mode by mode, so this
VM's drift falls on all of them alike. Per bundle:

- **bytes**: the files of its manifest, the manifest and its signature;
- **modes**: ``nocheck`` (``check_numerics=False``), ``check`` (the self-check run,
  ``"always"``) and ``cached`` (its verdict read back, as every load after a host's first);
  ``twin`` (int8 only): the u8 x u8 graph forced, as a host whose u8 x s8 kernel saturates
  runs it (derived in memory from ``model.onnx`` by a bundle of bowrt >= 0.4);
- **per run**: ``import_s`` (``import bowrt.runtime``), ``load_s`` (``Encoder(...)``),
  ``first_s`` (the first ``encode_queries`` of one query), ``cold_s`` = load + first;
  ``peak_rss_mb`` (the process's high-water mark, VmHWM) and ``base_rss_mb`` (its RSS once
  the runtime is imported, before the bundle is opened).

Medians are printed with the host's int8 ISA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from bowrt.bundle import MANIFEST, SIGNATURE_FILE, read_manifest  # noqa: E402
from bowrt.runtime import host  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import bowrt.runtime
from bowrt.runtime import Encoder, host
t1 = time.perf_counter()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
bundle, mode = sys.argv[1], sys.argv[2]
if mode == "twin":
    host.int8_kernel_exact = lambda: False  # as on a host whose u8 x s8 kernel saturates
base = status("VmRSS")
check = {"nocheck": False, "check": "always", "cached": True, "twin": True}[mode]
t2 = time.perf_counter()
enc = Encoder(bundle, "cpu", check_numerics=check)
t3 = time.perf_counter()
enc.encode_queries(["who wrote hamlet?"])
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t3 - t2, "first_s": t4 - t3, "cold_s": t4 - t2,
                  "graph": enc.graph_file, "cached": (enc.numerics or {}).get("cached"),
                  "base_rss_mb": base, "peak_rss_mb": status("VmHWM")}))
"""


def bundle_bytes(folder: Path) -> dict[str, int]:
    m = read_manifest(folder)
    out = {name: int(e["bytes"]) for name, e in m.files.items()}
    for extra in (MANIFEST, SIGNATURE_FILE):
        if (folder / extra).is_file():
            out[extra] = (folder / extra).stat().st_size
    return out


def one_run(bundle: Path, mode: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(bundle), mode], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{bundle} ({mode}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def modes_of(folder: Path) -> list[str]:
    m = read_manifest(folder)
    twin = m.variant == "int8" and len((m.quantization or {}).get("graphs") or {}) > 1
    return ["nocheck", "check", "cached"] + (["twin"] if twin else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", metavar="LABEL=BUNDLE")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args(argv)
    bundles = {}
    for item in args.bundles:
        label, _, path = item.partition("=")
        bundles[label] = Path(path)
    env = dict(os.environ, BOWRT_CACHE_DIR=tempfile.mkdtemp(prefix="bowrt-footprint-"))
    for folder in bundles.values():  # the page cache: every bundle read once, alike
        for name in bundle_bytes(folder):
            (folder / name).read_bytes()
        one_run(folder, "cached", env)  # the verdict each "cached" run reads back
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {b: {m: [] for m in modes_of(f)} for b, f in bundles.items()}
    for r in range(args.runs):
        for label, folder in (bundles.items() if r % 2 == 0 else list(bundles.items())[::-1]):
            for mode in runs[label]:
                runs[label][mode].append(one_run(folder, mode, env))
    report = {"host": host.describe(), "cpu_model": host.cpu_model(), "runs": args.runs, "bundles": {}}
    print(f"host: {host.summary()} ({host.cpu_model()}); medians of {args.runs} fresh processes")
    for label, folder in bundles.items():
        sizes = bundle_bytes(folder)
        row: dict[str, Any] = {"path": str(folder), "bytes": sizes, "total_mb": sum(sizes.values()) / 1e6, "modes": {}}
        print(f"{label}: {row['total_mb']:.1f} MB ({', '.join(f'{k} {v / 1e6:.1f}' for k, v in sizes.items())})")
        for mode, got in runs[label].items():
            med = {k: statistics.median(g[k] for g in got) for k in ("load_s", "first_s", "cold_s", "import_s",
                                                                     "peak_rss_mb", "base_rss_mb")}
            med["graph"], med["cached"] = got[0]["graph"], got[0]["cached"]
            row["modes"][mode] = {"median": med, "runs": got}
            print(f"  {mode:8s} load {med['load_s'] * 1e3:6.0f} ms  first vector {med['first_s'] * 1e3:5.0f} ms  "
                  f"cold {med['cold_s'] * 1e3:6.0f} ms  peak RSS {med['peak_rss_mb']:6.0f} MB "
                  f"(after import {med['base_rss_mb']:.0f})  graph {med['graph']}")
        modes = row["modes"]
        ratio = modes["cached"]["median"]["load_s"] / modes["nocheck"]["median"]["load_s"]
        row["cached_over_nocheck_load"] = ratio
        print(f"  cached load / no-check load: {ratio:.3f}")
        report["bundles"][label] = row
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
