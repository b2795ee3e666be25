"""Where the int8 graphs spend a corpus: ONNX Runtime's own profiler, summed by operator type.

    python benchmarks/int8_profile.py [--passages 300] [--graphs DIR]

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
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from int8_compare import build

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.models import twin_folder
from bowrt.runtime.encoder import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    pad_batch,
    plan_batches,
)
from bowrt.runtime.session import ort_session

GRAPHS = ("dynamic", "smoothquant")


def profile(path: Path, batches: list[tuple[np.ndarray, np.ndarray]], threads: int) -> tuple[float, collections.Counter]:
    """Wall seconds for the corpus and kernel seconds per operator type."""
    sess = ort_session(path, threads=threads,  # as the runtime runs it, plus the profiler
                       profile_prefix=str(Path(tempfile.gettempdir()) / f"bowrt_profile_{path.stem}"))
    names = [i.name for i in sess.get_inputs()]

    def run(ids: np.ndarray, mask: np.ndarray) -> None:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        sess.run(None, {n: feeds[n] for n in names})

    for batch in batches[:2]:  # warm-up: its profile events are skipped below
        run(*batch)
    t = time.perf_counter()
    for batch in batches:
        run(*batch)
    wall = time.perf_counter() - t
    trace = sess.end_profiling()
    events = json.loads(Path(trace).read_text())
    os.remove(trace)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    first_timed = runs[2]["ts"] if len(runs) > 2 else 0  # skip the 2 warm-up runs
    kernels: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed:
            kernels[e["args"]["op_name"]] += e["dur"] / 1e6
    return wall, kernels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--graphs", type=Path, default=None, help="folder with dynamic.onnx and smoothquant.onnx")
    ap.add_argument("--keep", type=Path, default=None, help="copy the built graphs here for later --graphs runs")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    corpus = [list(rng.integers(1000, 20000, int(n))) for n in rng.integers(20, 257, args.passages)]
    plan = plan_batches([len(c) for c in corpus], DEFAULT_MAX_BATCH_TOKENS["cpu"], DEFAULT_MAX_BATCH_SIZE)
    batches = [pad_batch([corpus[i] for i in b]) for b in plan]
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
