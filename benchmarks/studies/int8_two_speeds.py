"""Does an int8 graph run at one speed pass after pass, and if not, which operators change?

Answer: docs/benchmarks.md, "bowrt's int8 graphs run in two speeds".

    python benchmarks/studies/int8_two_speeds.py GRAPH_OR_BUNDLE [GRAPH_OR_BUNDLE ...] [--passes 8]
        [--passages 80] [--min-tokens 129] [--no-profile]

The same passages (token ids of ``--min-tokens`` to 256 tokens, batched as the runtime batches
them; :mod:`benchmarks.studies.common`) run ``--passes`` times through each graph in turn, a
0.2 s pause before each pass, in one process with nothing else loaded. Per pass it prints the
rate and the CPU seconds of the process's two busiest threads (both near the wall time: both
threads busy). Then, unless ``--no-profile``, the first graph again with ONNX Runtime's profiler
on: kernel seconds per operator type, per pass, so that a slow pass shows which operators slowed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.studies.common import feed, profiled_session, runtime_batches, token_corpus  # noqa: E402
from bowrt.runtime.session import ort_session  # noqa: E402


def _thread_ticks() -> dict[str, int]:
    out = {}
    for t in os.listdir("/proc/self/task"):
        try:
            f = Path(f"/proc/self/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
            out[t] = int(f[11]) + int(f[12])  # utime + stime, clock ticks
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended
    return out


def _one_pass(session, batches, rows: int, label: str) -> float:
    """One timed pass over ``batches`` after a 0.2 s pause; prints and returns its rate."""
    tick = os.sysconf("SC_CLK_TCK")
    time.sleep(0.2)
    c0, t0 = _thread_ticks(), time.perf_counter()
    for b in batches:
        session.run(None, feed(session, b))
    wall = time.perf_counter() - t0
    c1 = _thread_ticks()
    busy = sorted((c1[t] - c0.get(t, 0) for t in c1), reverse=True)[:2]
    print(f"{label}: {rows / wall:5.1f} passages/s, {wall:.2f} s; busiest threads "
          + ", ".join(f"{b / tick:.2f} s" for b in busy), flush=True)
    return rows / wall


def _profile(graph: Path, batches, n: int, threads: int) -> None:
    s = profiled_session(graph, threads, "two_speeds")
    for b in batches[:2]:
        s.run(None, feed(s, b))
    walls = []
    for _ in range(n):
        time.sleep(0.2)
        t0 = time.perf_counter()
        for b in batches:
            s.run(None, feed(s, b))
        walls.append(time.perf_counter() - t0)
    trace = Path(s.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")[2:]
    starts = [runs[i * len(batches)] for i in range(n)] + [float("inf")]
    per = [collections.Counter() for _ in range(n)]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            p = next((i for i in range(n) if starts[i] <= e["ts"] < starts[i + 1]), None)
            if p is not None:
                per[p][e["args"]["op_name"]] += e["dur"] / 1e6
    ops = [o for o, _ in sum(per, collections.Counter()).most_common(8)]
    print(f"\n{graph}, profiled: kernel seconds per pass\npass  wall   " + "  ".join(f"{o[:16]:>16s}" for o in ops))
    for p in range(n):
        print(f"{p + 1:4d} {walls[p]:5.2f}   " + "  ".join(f"{per[p][o]:16.2f}" for o in ops))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("graphs", nargs="+", help="bundle folders (their model.onnx) or .onnx files")
    ap.add_argument("--passes", type=int, default=8)
    ap.add_argument("--passages", type=int, default=80)
    ap.add_argument("--min-tokens", type=int, default=129)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    paths = [Path(g) / "model.onnx" if Path(g).is_dir() else Path(g) for g in args.graphs]
    rows = [r for r in token_corpus(8 * args.passages, np.random.default_rng(0)) if len(r) >= args.min_tokens]
    rows = rows[: args.passages]
    batches = runtime_batches(rows)
    sessions = [ort_session(p, threads=args.threads) for p in paths]
    for s in sessions:
        for b in batches[:2]:
            s.run(None, feed(s, b))
    rates: dict[int, list[float]] = {g: [] for g in range(len(paths))}
    for p in range(args.passes):  # graph by graph within a pass, so a phase of the host lands on all
        for g, s in enumerate(sessions):
            rates[g].append(_one_pass(s, batches, len(rows), f"{paths[g].parent.name} pass {p + 1}"))
    for g, path in enumerate(paths):
        r = rates[g]
        print(f"{path}: {min(r):.1f}-{max(r):.1f} passages/s over {len(r)} passes (max/min {max(r) / min(r):.2f})")
    if not args.no_profile:
        _profile(paths[0], batches, args.passes, args.threads)


if __name__ == "__main__":
    main()
