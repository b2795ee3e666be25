"""Where do the int8 graphs spend a corpus? ONNX Runtime's own profiler, summed by operator type.

Answer: docs/benchmarks.md, "Where the corpus time goes (ONNX Runtime profiler)".

    python benchmarks/studies/int8_profile.py [--passages 300] [--graphs DIR]

Builds the bert-base twin's standard dynamic int8 and bowrt int8 graphs as
`int8_compare.py` does (or reads dynamic.onnx / smoothquant.onnx from --graphs, e.g. a
folder an earlier run kept with --keep), runs one mixed-length corpus (20-256 tokens,
batched as the runtime batches it) through each with profiling on, and prints each
operator type's total kernel time next to the wall time. Kernel sums, not a speed
ratio: for that, use `int8_paired.py`.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness.models import twin_folder  # noqa: E402
from benchmarks.studies.common import Batch, corpus_batches, feed, kernel_seconds, profiled_session  # noqa: E402
from benchmarks.studies.int8_compare import build  # noqa: E402
from bowrt.runtime.plan import DEFAULT_MAX_BATCH_TOKENS  # noqa: E402

GRAPHS = ("dynamic", "smoothquant")
WARM_RUNS = 2  # batches run first, left out of the profile's sums


def profile(path: Path, batches: list[Batch], threads: int) -> tuple[float, collections.Counter]:
    """Wall seconds for the corpus and kernel seconds per operator type."""
    sess = profiled_session(path, threads, f"profile_{path.stem}")  # as the runtime runs it, plus the profiler
    for batch in batches[:WARM_RUNS]:
        sess.run(None, feed(sess, batch))
    t = time.perf_counter()
    for batch in batches:
        sess.run(None, feed(sess, batch))
    return time.perf_counter() - t, kernel_seconds(sess, skip_runs=WARM_RUNS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--graphs", type=Path, default=None, help="folder with dynamic.onnx and smoothquant.onnx")
    ap.add_argument("--keep", type=Path, default=None, help="copy the built graphs here for later --graphs runs")
    args = ap.parse_args()
    batches = corpus_batches(args.passages)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.graphs
        if folder is None:
            folder = Path(tmp)
            build(str(twin_folder(print)), folder)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for name in GRAPHS:
                    shutil.copy(folder / f"{name}.onnx", args.keep / f"{name}.onnx")
        results = {name: profile(folder / f"{name}.onnx", batches, args.threads) for name in GRAPHS}
    print(f"{args.passages} passages in {len(batches)} batches (budget {DEFAULT_MAX_BATCH_TOKENS['cpu']} tokens), "
          f"{args.threads} threads; seconds")
    ops = sorted({op for _, k in results.values() for op in k}, key=lambda op: -max(k[op] for _, k in results.values()))
    print(f"| operator | {' | '.join(GRAPHS)} |\n|---|{'---|' * len(GRAPHS)}")
    for op in ops:
        if max(k[op] for _, k in results.values()) >= 0.005:
            print(f"| {op} | " + " | ".join(f"{k[op]:.2f}" if op in k else "—" for _, k in results.values()) + " |")
    print("| **all kernels** | " + " | ".join(f"{sum(k.values()):.2f}" for _, k in results.values()) + " |")
    print("| wall | " + " | ".join(f"{w:.2f}" for w, _ in results.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
