"""How long should the dynamic batcher hold a batch open? (``max_wait_ms``)

Answer: docs/benchmarks.md, "The dynamic batcher's wait".

    python benchmarks/studies/batcher_wait.py [--waits 0,2,5] [--clients 1,4,16] [--seconds 2] [--rounds 2] [BUNDLE ...]

Closed-loop clients sending single queries (the bench's concurrent workload),
through a DynamicBatcher with each ``max_wait_ms`` and, for reference, direct
``encode_queries`` calls; interleaved round by round; medians of req/s and p99.
Default bundles: the bert-base twin's fp32 and int8 from the bench cache.
With ``max_wait_ms=0`` the worker runs whatever is queued as soon as it is free:
requests still merge while a batch computes, and a lone request never waits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bowrt import Encoder  # noqa: E402
if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness.models import RANDOM_WEIGHT_GATES, ensure_bundles, twin_folder  # noqa: E402
from benchmarks.harness.workloads import concurrent, make_texts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="*")
    ap.add_argument("--waits", default="0,2,5")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    waits = [float(w) for w in args.waits.split(",")]
    clients = [int(c) for c in args.clients.split(",")]
    if args.bundles:
        bundles = {Path(b).name: Path(b) for b in args.bundles}
    else:
        bundles = ensure_bundles(twin_folder(print), ("fp32", "int8"), RANDOM_WEIGHT_GATES, print)
    queries = make_texts(next(iter(bundles.values())) / "tokenizer.json", queries=256, corpus=1).queries
    encoders = {name: Encoder(path, providers="cpu") for name, path in bundles.items()}
    modes = [("direct", None)] + [("batched", w) for w in waits]
    res: dict[tuple, list] = {}
    for r in range(args.rounds + 1):  # round 0: warm-up
        for name, enc in encoders.items():
            for c in clients:
                for mode, wait in modes:
                    out = concurrent(enc, queries, c, 0.3 if r == 0 else args.seconds, mode,
                                     max_wait_ms=wait)
                    if r:
                        lat = sorted(out.latencies_ms)
                        res.setdefault((name, c, mode, wait), []).append(
                            (out.rps, lat[int(0.99 * (len(lat) - 1))]))
    print(f"\n{args.rounds} rounds x {args.seconds} s per point, medians\n")
    print("| bundle | clients | mode | max_wait_ms | req/s | p99 ms | x direct |")
    print("|---|---|---|---|---|---|---|")
    for name in encoders:
        for c in clients:
            direct = statistics.median(x[0] for x in res[(name, c, "direct", None)])
            for mode, wait in modes:
                rows = res[(name, c, mode, wait)]
                rps, p99 = statistics.median(x[0] for x in rows), statistics.median(x[1] for x in rows)
                print(f"| {name} | {c} | {mode} | {'-' if wait is None else f'{wait:g}'} | {rps:.1f} | {p99:.1f} | {rps / direct:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
