"""``python -m benchmarks``: the command line of the benchmark run (``--help`` lists every option).

    python -m benchmarks                                  # the bert-base twin: fp32 + int8 bundles vs every peer
    python -m benchmarks bundles/fp32 bundles/int8 --model ./bowdpr -o results/
    python -m benchmarks --model ./minilm --quick         # a smoke run, under 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.harness.config import DEFAULT_AGAINST, WORKLOADS, BenchConfig

__all__ = ["main", "parser"]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark bowrt bundles against PyTorch and peer tools on this machine (all local, no hub).",
    )
    p.add_argument("bundles", nargs="*", metavar="BUNDLE",
                   help="bowrt bundle folders to benchmark (default: fp32 + int8 bundles of --model, exported into the cache)")
    p.add_argument("--model", metavar="DIR",
                   help="local Hugging Face folder the peers load (default: the bert-base twin, built into the cache; "
                        "with bundles: the bundles' source folder when it exists)")
    p.add_argument("--against", type=_csv, default=DEFAULT_AGAINST, metavar="LIST",
                   help=f"peers, comma-separated (default: {','.join(DEFAULT_AGAINST)}; st-onnx = plain, O3 and int8; '' = none)")
    p.add_argument("--workloads", type=_csv, default=WORKLOADS, metavar="LIST",
                   help=f"comma-separated (default: {','.join(WORKLOADS)})")
    p.add_argument("--rounds", type=int, metavar="N", help="measured rounds after the warm-up (default 3; --quick: 1)")
    p.add_argument("--corpus", type=int, metavar="N",
                   help="passages in the mixed-length corpus workload (default 1000; --quick: 200, fewer if needed)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, 30 latency calls, 200-passage corpus, 1 s per concurrency point; "
                        "leaves out peers (and says which) to stay under ~3 minutes")
    p.add_argument("--threads", type=int, metavar="N", help="threads per system (default: physical cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every system runs (default cpu)")
    p.add_argument("--gate", action="append", default=[], metavar="VARIANT.METRIC=VALUE",
                   help="parity gate override for the bundles exported here (repeatable); the twin gets the random-weight gates")
    p.add_argument("--no-accuracy", action="store_true", help="skip the accuracy table (MiniLM)")
    p.add_argument("--no-memory", action="store_true", help="skip cold start and peak RSS (one process per system)")
    p.add_argument("--no-buckets", action="store_true",
                   help="skip the corpus by passage length (each round ends with one call per system and bucket)")
    p.add_argument("-o", "--out", default="results", metavar="DIR", help="output folder (default: results/)")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``python -m benchmarks``."""
    from benchmarks.harness.runner import run
    from bowrt.errors import BowrtError

    args = parser().parse_args(argv)
    for name, value in (("--rounds", args.rounds), ("--threads", args.threads), ("--corpus", args.corpus)):
        if value is not None and value < 1:
            parser().error(f"{name} must be >= 1, got {value}")
    cfg = BenchConfig(
        bundles=tuple(args.bundles), model=args.model, against=args.against, workloads=args.workloads,
        rounds=args.rounds, corpus=args.corpus, quick=args.quick, threads=args.threads, out=args.out, gates=tuple(args.gate),
        device=args.device, accuracy=not args.no_accuracy, memory=not args.no_memory, buckets=not args.no_buckets,
    )
    try:
        run(cfg)
    except BowrtError as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 2
    return 0
