"""Do the lanes' narrow budgets cost the dynamic batcher (serve's path) anything?

Answer: docs/benchmarks.md, "Batch lanes" ("The batcher under concurrent clients").

    python benchmarks/studies/batcher_narrow.py BUNDLE [BUNDLE ...] [--clients 4,16,64] [--rounds 5]
        [--seconds 3] [--threads 2]

The batcher merges concurrent single queries into one call; with lanes, the Encoder plans that
call with its narrow budgets (a merged call of 11 queries of about 20 tokens becomes two
128-token batches, side by side on one thread each), where without them it is one batch on all
threads. Per bundle, two Encoders in one process: the default (``narrow_budget`` as shipped)
and ``wide`` (the same, ``narrow_budget = ()``: 512 tokens for every row). For each client
count, both run the bench's closed-loop ``batched`` workload (``workloads.concurrent``: each
client thread submits one query and waits, for ``--seconds``) on the bench's queries, in
turns, the order flipped every round. Prints each side's median requests/s and the paired
median ratio default / wide with its range over rounds.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness import workloads  # noqa: E402
from bowrt.runtime import Encoder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16, 64])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for bundle in args.bundles:
        queries = workloads.make_texts(bundle / "tokenizer.json", queries=200, corpus=1).queries
        encs = {"default": Encoder(bundle, threads=args.threads, check_numerics=False),
                "wide": Encoder(bundle, threads=args.threads, check_numerics=False)}
        encs["wide"].narrow_budget = ()
        print(f"{bundle}: batch lanes {encs['default'].batch_lanes}, narrow budget "
              f"{list(encs['default'].narrow_budget)}", flush=True)
        rps: dict[tuple[str, int], list[float]] = {(n, c): [] for n in encs for c in args.clients}
        for r in range(args.rounds):
            for c in args.clients:
                for n in list(encs)[:: 1 if r % 2 == 0 else -1]:
                    rps[(n, c)].append(workloads.concurrent(encs[n], queries, c, args.seconds, "batched").rps)
        for c in args.clients:
            ratio = [a / b for a, b in zip(rps[("default", c)], rps[("wide", c)])]
            print(f"  {c} clients: default {statistics.median(rps[('default', c)]):.0f} req/s, wide "
                  f"{statistics.median(rps[('wide', c)]):.0f} req/s; default / wide, paired "
                  f"{statistics.median(ratio):.2f}x [{min(ratio):.2f}-{max(ratio):.2f}]", flush=True)


if __name__ == "__main__":
    main()
