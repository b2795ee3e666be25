"""What does each int8 profile (or any int8 bundles) cost, operator by operator, and how fast is each, paired?

Answer: docs/int8.md, "The speed profile".

    python benchmarks/studies/int8_profiles.py BUNDLE_OR_ONNX [BUNDLE_OR_ONNX ...] [--passages 120] [--rounds 3]
        [--no-profile]

Each argument is a bundle folder (its ``model.onnx``) or a graph file. Every graph runs the same
mixed-length corpus (token ids, 20-256 tokens, batched as the runtime batches it;
:mod:`benchmarks.studies.common`), through the runtime's own session builder. First, unless
``--no-profile``: one profiled pass per graph, kernel seconds by operator type. Then ``--rounds``
paired rounds: every corpus batch on each graph back to back (the order flipped every round), and
batch-1 queries (8-18 tokens) in turns of 16 calls per graph, the first 2 of a turn not counted, a
50 ms pause before each turn (the bench's form: the previous session's spinning threads would
otherwise slow the next call). Prints per round each graph's corpus seconds and batch-1 p50, and
both as ratios to the first graph (> 1: faster than the first).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.studies.common import corpus_batches, feed, kernel_seconds, profiled_session  # noqa: E402
from bowrt.runtime.session import ort_session  # noqa: E402

TURN, NOT_COUNTED, PAUSE_S = 16, 2, 0.05


def _graph(arg: str) -> Path:
    p = Path(arg)
    return p / "model.onnx" if p.is_dir() else p


def _run_ms(sess, batch) -> float:
    t0 = time.perf_counter()
    sess.run(None, feed(sess, batch))
    return (time.perf_counter() - t0) * 1000.0


def profile(graphs: list[Path], batches, threads: int) -> None:
    for g in graphs:
        sess = profiled_session(g, threads, "profiles")
        for b in batches[:3]:
            sess.run(None, feed(sess, b))
        wall = sum(_run_ms(sess, b) for b in batches) / 1000.0
        k = kernel_seconds(sess, skip_runs=3)
        print(f"{g}: wall {wall:.2f} s, kernels {sum(k.values()):.2f} s")
        for op, v in k.most_common(12):
            print(f"    {op:28s} {v:.3f} s")


def paired_round(sessions: list, batches, queries, r: int) -> tuple[list[float], list[float]]:
    """(corpus seconds per graph, batch-1 p50 ms per graph) of one round."""
    corpus = [0.0] * len(sessions)
    for b in batches:
        for i in (range(len(sessions)) if r % 2 == 0 else reversed(range(len(sessions)))):
            corpus[i] += _run_ms(sessions[i], b) / 1000.0
    lat: list[list[float]] = [[] for _ in sessions]
    for t0 in range(0, len(queries), TURN):
        for i in np.roll(np.arange(len(sessions)), -(t0 // TURN + r)):
            time.sleep(PAUSE_S)
            lat[i] += [_run_ms(sessions[i], q) for q in queries[t0:t0 + TURN]][NOT_COUNTED:]
    return corpus, [statistics.median(x) for x in lat]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graphs", nargs="+")
    ap.add_argument("--passages", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    graphs = [_graph(g) for g in args.graphs]
    batches = corpus_batches(args.passages)
    lengths = (8, 12, 14, 18, 10, 16) * 16
    queries = [(np.array([list(range(1000, 1000 + n))]), np.ones((1, n), np.int64)) for n in lengths]
    if not args.no_profile:
        profile(graphs, batches, args.threads)
    sessions = [ort_session(g, threads=args.threads) for g in graphs]
    for s in sessions:
        for b in batches[:3]:
            s.run(None, feed(s, b))
    for r in range(args.rounds):
        corpus, p50 = paired_round(sessions, batches, queries, r)
        print(f"round {r + 1}: corpus s {' '.join(f'{c:.2f}' for c in corpus)} (x first: "
              f"{' '.join(f'{corpus[0] / c:.3f}' for c in corpus)}); batch-1 p50 ms {' '.join(f'{x:.2f}' for x in p50)} "
              f"(x first: {' '.join(f'{p50[0] / x:.3f}' for x in p50)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
