"""Which batch token budget (``max_batch_tokens``) should ``encode_passages`` default to on CPU?

Answer: docs/benchmarks.md, "Choosing the batch token budget" (and the default in bowrt/runtime/plan.py).

    python benchmarks/studies/budget_sweep.py [--passages 200] [--rounds 2] [--budgets 256,512,...] [BUNDLE ...]

Encodes one mixed-length corpus (20-256 tokens, the bench's generator) with each
budget, interleaved round by round, on each bundle (default: the bert-base twin's
fp32 and int8 bundles from the bench cache); prints median passages/s per budget
and each budget's ratio to the best. The runtime's default is the smallest budget
within 3% of the best on every bundle (smaller batches: less memory, earlier results).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bowrt import Encoder  # noqa: E402
if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness.models import RANDOM_WEIGHT_GATES, ensure_bundles, twin_folder  # noqa: E402
from benchmarks.harness.workloads import make_texts  # noqa: E402

WITHIN = 0.03


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="*")
    ap.add_argument("--passages", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budgets", default="256,512,1024,2048,4096,8192")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    if args.bundles:
        bundles = {Path(b).name: Path(b) for b in args.bundles}
    else:
        bundles = ensure_bundles(twin_folder(print), ("fp32", "int8"), RANDOM_WEIGHT_GATES, print)
    first = next(iter(bundles.values()))
    texts = make_texts(first / "tokenizer.json", queries=1, corpus=args.passages).corpus
    encoders = {(name, b): Encoder(path, providers="cpu", max_batch_tokens=b) for name, path in bundles.items() for b in budgets}
    print(f"{len(texts)} passages, budgets {budgets}, {args.rounds} rounds after a warm-up, "
          f"threads {next(iter(encoders.values())).threads}", flush=True)
    rates: dict[tuple[str, int], list[float]] = {k: [] for k in encoders}
    for r in range(args.rounds + 1):
        for key, enc in encoders.items():
            t = time.perf_counter()
            enc.encode_passages(texts if r else texts[:16])
            if r:
                rates[key].append(len(texts) / (time.perf_counter() - t))
                print(f"  round {r} {key[0]} budget {key[1]}: {rates[key][-1]:.2f} passages/s", flush=True)
    choice = []
    for name in bundles:
        med = {b: statistics.median(rates[(name, b)]) for b in budgets}
        best = max(med.values())
        print(f"\n{name}: " + ", ".join(f"{b}: {v:.2f}/s ({v / best:.2f})" for b, v in med.items()))
        choice.append(min(b for b, v in med.items() if v >= (1 - WITHIN) * best))
    print(f"\nsmallest budget within {WITHIN:.0%} of the best on every bundle: {max(choice)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
