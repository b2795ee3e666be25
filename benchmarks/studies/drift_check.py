"""Is this host in a slow phase, and does a slow phase hit every graph alike?

Answer: docs/benchmarks.md, "The issue-26 headline runs".

    python benchmarks/studies/drift_check.py GRAPH_OR_BUNDLE [GRAPH_OR_BUNDLE ...] [--passes 6] [--passages 160]

Each pass runs the same mixed-length corpus (token ids, the runtime's batching;
:mod:`benchmarks.studies.common`) through each graph in turn, a 0.2 s pause between graphs,
and prints each graph's seconds. Then, per graph, each pass's median over batches of (this
batch's time / the same batch's median over passes): a pass whose every batch is slower
(ratio well above 1) met a slow phase of the machine, not a slow batch. A graph that is not
bowrt's (no manifest.json next to it: a peer's export) runs through the same session builder
with every optimizer on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.studies.common import corpus_batches, feed  # noqa: E402
from bowrt.runtime.session import ort_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("graphs", nargs="+", help="bundle folders (their model.onnx) or .onnx files")
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--passages", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    paths = [Path(g) / "model.onnx" if Path(g).is_dir() else Path(g) for g in args.graphs]
    sessions = [ort_session(p, threads=args.threads, disabled=None if (p.parent / "manifest.json").exists() else [])
                for p in paths]
    batches = corpus_batches(args.passages)
    for s in sessions:
        for b in batches[:3]:
            s.run(None, feed(s, b))
    times = np.zeros((len(sessions), args.passes, len(batches)))
    for p in range(args.passes):
        for g, s in enumerate(sessions):
            for i, b in enumerate(batches):
                f = feed(s, b)
                t0 = time.perf_counter()
                s.run(None, f)
                times[g, p, i] = time.perf_counter() - t0
            time.sleep(0.2)
        print(f"pass {p + 1}: " + "  ".join(f"{'/'.join(path.parts[-3:])} {times[g, p].sum():.2f} s"
                                             for g, path in enumerate(paths)), flush=True)
    for g, path in enumerate(paths):
        ratio = np.median(times[g] / np.median(times[g], axis=0), axis=1)
        print(f"{path}: per pass, median batch time over that batch's median: {np.round(ratio, 3).tolist()}")


if __name__ == "__main__":
    main()
