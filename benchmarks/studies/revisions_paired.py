"""Is a refactor free? Paired before/after speed of two bowrt checkouts on the same bundles.

Answer: docs/benchmarks.md, "History" (each refactor's paired before/after run).

    python benchmarks/studies/revisions_paired.py --before /tmp/before --after . \
        --bundle bundles/twin/fp32 --bundle bundles/twin/int8 [--rounds 5] [--passages 190] [--queries 100]

Two versions of bowrt cannot share one process, so each measurement is a fresh worker
process importing one checkout (``PYTHONPATH=<checkout>``): it loads the bundle, warms up,
then times the mixed-length corpus (passages/s, one ``encode_passages`` call, as the bench
runs it) and batch-1 queries (p50, ms). Rounds alternate the order (before, after, after,
before, ...) so that this VM's drift hits both alike. Prints each round and the medians of
the after/before ratios; ``--json`` writes them. Texts come from the bench's generator
(``benchmarks/harness/workloads.py``, fixed seed), so both checkouts get the same token rows. Use a
bundle both versions can read (one exported by the older).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
import numpy as np
import bowrt
from bowrt.runtime import Encoder
bundle, texts_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = json.load(open(texts_file))
enc = Encoder(bundle, "cpu", threads=threads)
enc.encode_passages(texts["passages"][:16]); enc.encode_queries(texts["queries"][:8])  # warm up
t0 = time.perf_counter(); enc.encode_passages(texts["passages"]); corpus_s = time.perf_counter() - t0
lat = []
for q in texts["queries"]:
    t0 = time.perf_counter(); enc.encode_queries([q]); lat.append(time.perf_counter() - t0)
print(json.dumps({"bowrt": bowrt.__file__, "passages_per_s": len(texts["passages"]) / corpus_s,
                  "batch1_p50_ms": float(np.median(lat)) * 1000}))
"""


def measure(checkout: Path, bundle: str, texts_file: Path, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
    p = subprocess.run([sys.executable, "-c", WORKER, str(Path(bundle).resolve()), str(texts_file), str(threads)],
                       capture_output=True, text=True, env=env, cwd=str(checkout), timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"worker for {checkout} failed:\n{p.stderr[-2000:]}")
    got = json.loads(p.stdout.strip().splitlines()[-1])
    if not got["bowrt"].startswith(str(checkout.resolve())):
        raise SystemExit(f"worker imported {got['bowrt']}, not the checkout {checkout}")
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--bundle", action="append", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--passages", type=int, default=190)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    if __package__ in (None, ""):
        import _checkout  # noqa: F401  (the checkout root on sys.path)
    from benchmarks.harness.workloads import make_texts

    texts = make_texts(Path(args.bundle[0]) / "tokenizer.json", queries=args.queries, corpus=args.passages)
    texts_file = (Path(os.environ.get("TMPDIR", "/tmp")) / f"bowrt-revisions-{os.getpid()}.json").resolve()
    texts_file.write_text(json.dumps({"queries": texts.queries, "passages": texts.corpus}), encoding="utf-8")
    report: dict = {}
    for bundle in args.bundle:
        rows = []
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            got = {side: measure(getattr(args, side), bundle, texts_file, args.threads) for side in order}
            rows.append(got)
            print(f"{bundle} round {r + 1}: " + "  ".join(
                f"{s} {got[s]['passages_per_s']:.2f} p/s {got[s]['batch1_p50_ms']:.2f} ms" for s in ("before", "after")),
                flush=True)
        corpus = [g["after"]["passages_per_s"] / g["before"]["passages_per_s"] for g in rows]
        batch1 = [g["before"]["batch1_p50_ms"] / g["after"]["batch1_p50_ms"] for g in rows]
        report[bundle] = {"rounds": rows, "corpus_speed_after_over_before": statistics.median(corpus),
                          "corpus_range": [min(corpus), max(corpus)],
                          "batch1_speed_after_over_before": statistics.median(batch1),
                          "batch1_range": [min(batch1), max(batch1)]}
        print(f"{bundle}: after/before speed, median of {args.rounds} rounds: corpus "
              f"{statistics.median(corpus):.3f}x [{min(corpus):.3f}-{max(corpus):.3f}], batch-1 "
              f"{statistics.median(batch1):.3f}x [{min(batch1):.3f}-{max(batch1):.3f}]", flush=True)
    texts_file.unlink(missing_ok=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
