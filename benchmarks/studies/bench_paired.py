"""Is a change to the harness free? The bench itself from two checkouts, run in turns, its figures paired.

Answer: docs/benchmarks.md, "History" (each harness change's paired before/after run).

    python benchmarks/studies/bench_paired.py --before /tmp/before --after . [--pairs 2] [-o results/bench-paired] \
        -- bundles/twin/fp32 bundles/twin/int8 --model DIR --against torch,ct2,ort-qint8 --workloads latency,corpus \
           --rounds 2 --corpus 100 --no-memory --no-accuracy

Everything after ``--`` is handed to ``python -m benchmarks`` as it is. Each run is a fresh
process in one checkout (``PYTHONPATH`` and the working folder are that checkout, so its
``benchmarks`` and its ``bowrt`` are the ones imported), writing into its own folder. Runs
go before, after, after, before, ... (``--pairs`` pairs), so that this VM's drift between
minutes hits both alike; pair k is the k-th before run with the k-th after run. For every
system and workload that both ran it prints the medians and the after/before ratio of each
pair (speed: > 1 means the after checkout measured it faster), then their median and range.
Give both the same bundles (``BUNDLE ...`` after ``--``): a bundle exported by one
checkout is then timed by both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = {"latency": ("p50_ms", False), "batch32x128": ("items_per_s", True), "corpus": ("items_per_s", True)}


def run_bench(checkout: Path, args: list[str], out: Path) -> dict:
    """One ``python -m benchmarks`` run in ``checkout``; its results.json."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [sys.executable, "-m", "benchmarks", *args, "-o", str(out)]
    print(f"[{checkout}] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_paired: the bench in {checkout} exited {done.returncode}")
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def figures(res: dict) -> dict[tuple[str, str], float]:
    """(workload, system) -> its median figure (speed: higher is better after the sign flip of latency)."""
    out = {}
    for wl, (metric, _) in METRICS.items():
        for name, r in res.get("workloads", {}).get(wl, {}).get("results", {}).items():
            if r.get(metric, {}).get("median"):
                out[(wl, name)] = r[metric]["median"]
    return out


def pair_ratios(before: list[dict], after: list[dict]) -> dict[tuple[str, str], list[float]]:
    """Per (workload, system): after/before speed of each pair (latency inverted, so > 1 is faster)."""
    out: dict[tuple[str, str], list[float]] = {}
    for b, a in zip(before, after):
        fb, fa = figures(b), figures(a)
        for key in fb.keys() & fa.keys():
            higher = METRICS[key[0]][1]
            out.setdefault(key, []).append(fa[key] / fb[key] if higher else fb[key] / fa[key])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the checkout before the change")
    ap.add_argument("--after", type=Path, required=True, help="the checkout after it")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("-o", "--out", type=Path, default=Path("results/bench-paired"))
    ap.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then the arguments of python -m benchmarks")
    args = ap.parse_args()
    bench_args = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for k in range(args.pairs):
        for side in ("before", "after") if k % 2 == 0 else ("after", "before"):
            checkout = (args.before if side == "before" else args.after).resolve()
            runs[side].append(run_bench(checkout, bench_args, (args.out / f"{side}-{k + 1}").resolve()))
    ratios = pair_ratios(runs["before"], runs["after"])
    print(f"{args.pairs} pair(s), before {args.before} / after {args.after}; after/before speed per pair (> 1: faster)")
    print("| workload | system | before (median of runs) | after | after / before per pair | median |\n|---|---|---|---|---|---|")
    for (wl, name), r in sorted(ratios.items()):
        b = statistics.median(figures(x)[(wl, name)] for x in runs["before"])
        a = statistics.median(figures(x)[(wl, name)] for x in runs["after"])
        print(f"| {wl} | {name} | {b:.4g} | {a:.4g} | {', '.join(f'{x:.3f}' for x in r)} | {statistics.median(r):.3f} |")
    (args.out / "pairs.json").write_text(json.dumps({f"{wl}/{n}": r for (wl, n), r in ratios.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
