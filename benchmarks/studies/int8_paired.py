"""Is bowrt int8 faster than ONNX Runtime's standard dynamic int8 once this VM's drift is paired away?
(issue 7): the two graphs alternating, so that the drift (±20% between minutes) hits both alike.

Answer: docs/int8.md, "Agreement and speed against the standard dynamic int8" (the paired
runs), and "Static nodes (opt-in)" for the --static-* forms.

    python benchmarks/studies/int8_paired.py [--rounds 3] [--passages 1000] [--queries 300]
                                     [--block 1] [--spinning off|on]
                                     [--static-tolerance X | --static-roles attention,attn_out]

`int8_compare.py` runs each graph's workloads in one long block, so a slow minute lands
on one graph only. By default every corpus batch and every batch-1 query runs on both
graphs back to back (order flipped each call), with ORT's thread spinning off so that one
session's idle threads do not steal the other's cores. That is the strict form: every
operator pays a thread wake-up, which costs the graph with more operators more than a
deployment would see, and its ratios are steady between rounds (±0.5% on the corpus).
--block N --spinning on is the deployed form: ORT's default spinning, as the runtime
(and sentence-transformers and optimum) run sessions, with the calls in blocks of N
(queries: 3N), order flipped each block and a 50 ms pause before each block so the other
session's spinning threads go idle first; its ratios scatter more. Graphs are the
bert-base twin's, built as `int8_compare.py` builds them; the corpus is mixed-length
(20-256 tokens) and batched as the runtime batches it. Prints per-round ratios and
their medians.

--static-tolerance builds bowrt's graph as `bowrt export --int8-static-tolerance X` would
(on the twin's random weights any X >= 1.5 makes every node static); --static-roles makes
exactly the nodes of those roles static (attention = QKV, attn_out, ffn_in, ffn_out), e.g.
to time the mix that real weights choose.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness.models import twin_folder  # noqa: E402
from benchmarks.studies.common import runtime_batches, token_corpus  # noqa: E402
from benchmarks.studies.int8_compare import build  # noqa: E402
from bowrt.export import probes  # noqa: E402

PAIR = ("dynamic", "smoothquant")
ROLES = ("attention", "attn_out", "ffn_in", "ffn_out")


def paired(runs: dict, calls: list[tuple[np.ndarray, np.ndarray]], block: int, pause: float) -> dict[str, list[float]]:
    """Per-call seconds of each graph: ``calls`` in blocks of ``block``, every block on
    both graphs back to back (order flipped each block), ``pause`` seconds before each."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for b, start in enumerate(range(0, len(calls), block)):
        for name in (PAIR if b % 2 == 0 else PAIR[::-1]):
            if pause:
                time.sleep(pause)
            for ids, mask in calls[start:start + block]:
                t = time.perf_counter()
                runs[name](ids, mask)
                times[name].append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passages", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--block", type=int, default=1, help="corpus batches per block (queries: 3x as many when > 1)")
    ap.add_argument("--spinning", choices=("on", "off"), default="off", help="ORT intra-op thread spinning")
    ap.add_argument("--static-tolerance", type=float, default=None)
    ap.add_argument("--static-roles", default=None, help="comma-separated: attention,attn_out,ffn_in,ffn_out")
    args = ap.parse_args()
    if args.block < 1:
        ap.error("--block must be >= 1")
    options = {}
    if args.static_tolerance is not None:
        options["static_tolerance"] = args.static_tolerance
    if args.static_roles:
        options["static_roles"] = frozenset(args.static_roles.split(","))
        if not options["static_roles"] <= set(ROLES):
            ap.error(f"--static-roles: valid roles are {', '.join(ROLES)}")
    rng = np.random.default_rng(0)
    batches = runtime_batches(token_corpus(args.passages, rng))
    query = rng.integers(1000, 20000, (1, 13)).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        _, _, paths = build(str(twin_folder(print)), Path(tmp), **options)
        runs = {name: probes.ort_runner(str(paths[name]), spinning=args.spinning == "on") for name in PAIR}
        pause = 0.05 if args.block > 1 else 0.0
        paired(runs, batches[:2] + [(query, np.ones_like(query))] * 20, args.block, pause)  # warm-up
        corpus_ratio, query_ratio = [], []
        for r in range(args.rounds):
            c = paired(runs, batches, args.block, pause)
            q = paired(runs, [(query, np.ones_like(query))] * args.queries, 3 * args.block if pause else 1, pause)
            corpus_ratio.append(sum(c["dynamic"]) / sum(c["smoothquant"]))
            query_ratio.append(statistics.median(q["dynamic"]) / statistics.median(q["smoothquant"]))
            print(f"round {r + 1}: corpus {args.passages / sum(c['dynamic']):.2f} vs {args.passages / sum(c['smoothquant']):.2f} "
                  f"passages/s (dynamic vs bowrt int8) = {corpus_ratio[-1]:.3f}x; batch-1 p50 "
                  f"{statistics.median(q['dynamic']) * 1e3:.2f} vs {statistics.median(q['smoothquant']) * 1e3:.2f} ms "
                  f"= {query_ratio[-1]:.3f}x", flush=True)
    print(f"\nbowrt int8 / standard dynamic int8, medians over {args.rounds} rounds: "
          f"corpus {statistics.median(corpus_ratio):.3f}x [{min(corpus_ratio):.3f}-{max(corpus_ratio):.3f}], "
          f"batch-1 {statistics.median(query_ratio):.3f}x [{min(query_ratio):.3f}-{max(query_ratio):.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
