"""What does the portable int8 cost (issue 16): the self-check at load, the u8 twin where it is not needed?

Answer: docs/int8.md, "Measured" (the cost of the self-check and the twin).

    python benchmarks/studies/int8_host.py OLD_INT8_BUNDLE NEW_INT8_BUNDLE [--fp32 FP32_BUNDLE]
                                   [--rounds 5] [--passages 192] [--queries 96] [--loads 7] [-o out.json]

- **load**: ``Encoder(NEW, check_numerics=False)`` against ``check_numerics=True``,
  alternating, median of ``--loads`` each: what the self-check adds to a load.
- **paired speed**: OLD (a bundle from before the change) against NEW, running the graph
  this host picks, alternating chunk by chunk with the order flipped each round: a
  mixed-length corpus (passages/s, the runtime's batching) and batch-1 queries (p50 ms).
  Per-round NEW/OLD ratios and their median.
- **the twin where it is not needed**: NEW's u8 x u8 graph forced (as a non-VNNI host
  runs it) against its u8 x s8 graph, same workloads: the price of the twin on this host.
  (On a non-VNNI host the u8 x s8 graph saturates, so there is no exact u8 x s8 speed to
  compare with; the twin is compared with fp32 there when ``--fp32`` is given.)

Every figure is printed with the host's int8 ISA; only ratios from one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from bowrt import Encoder  # noqa: E402
from bowrt.export.probes import load_text_set  # noqa: E402
from bowrt.runtime import host  # noqa: E402

CHUNK = 32  # passages per encode call


def texts(passages: int, queries: int) -> tuple[list[tuple[str, str]], list[str]]:
    sets = [load_text_set("probes"), load_text_set("calibration")]
    pool = [p for s in sets for p in s.passages]
    qs = [q for s in sets for q in s.queries]
    return [pool[i % len(pool)] for i in range(passages)], [qs[i % len(qs)] for i in range(queries)]


def paired(encoders: dict[str, Encoder], passages: list, queries: list, rounds: int) -> dict[str, Any]:
    """Alternate the encoders chunk by chunk (corpus) and query by query (batch 1)."""
    names = list(encoders)
    for enc in encoders.values():  # warm-up: every batch shape once
        enc.encode_passages(passages[:CHUNK])
        enc.encode_queries(queries[:8])
    per_round: list[dict[str, Any]] = []
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        corpus = {n: 0.0 for n in names}
        lat: dict[str, list[float]] = {n: [] for n in names}
        for start in range(0, len(passages), CHUNK):
            for n in order:
                t0 = time.perf_counter()
                encoders[n].encode_passages(passages[start : start + CHUNK])
                corpus[n] += time.perf_counter() - t0
        for q in queries:
            for n in order:
                t0 = time.perf_counter()
                encoders[n].encode_queries([q])
                lat[n].append(time.perf_counter() - t0)
        per_round.append({n: {"passages_per_s": len(passages) / corpus[n],
                              "p50_ms": 1e3 * statistics.median(lat[n])} for n in names})
    a, b = names
    return {
        "rounds": per_round,
        "median": {n: {k: statistics.median(pr[n][k] for pr in per_round) for k in ("passages_per_s", "p50_ms")}
                   for n in names},
        f"corpus_ratio_{b}_over_{a}": statistics.median(pr[b]["passages_per_s"] / pr[a]["passages_per_s"]
                                                        for pr in per_round),
        f"batch1_speed_ratio_{b}_over_{a}": statistics.median(pr[a]["p50_ms"] / pr[b]["p50_ms"] for pr in per_round),
    }


def load_cost(bundle: Path, loads: int) -> dict[str, Any]:
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(loads):
        for check in ((False, True) if i % 2 == 0 else (True, False)):
            t0 = time.perf_counter()
            Encoder(bundle, check_numerics=check)
            times[check].append(time.perf_counter() - t0)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {"load_s_without_check": off, "load_s_with_check": on, "added_s": on - off, "added_fraction": (on - off) / off}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--fp32", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--passages", type=int, default=192)
    ap.add_argument("--queries", type=int, default=96)
    ap.add_argument("--loads", type=int, default=7)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args()

    info = host.describe()
    print(f"host: {info['machine']}, int8 ISA {info['int8_isa']} ({info['int8_accumulation']} accumulation); "
          f"flags {', '.join(info['flags'])}", flush=True)
    passages, queries = texts(args.passages, args.queries)
    out: dict[str, Any] = {"host": info, "passages": len(passages), "queries": len(queries), "rounds": args.rounds}

    out["load"] = load_cost(args.new, args.loads)
    print(f"load: {out['load']['load_s_without_check']:.3f} s, self-check adds {out['load']['added_s'] * 1e3:.0f} ms "
          f"({100 * out['load']['added_fraction']:.1f} %)", flush=True)

    new = Encoder(args.new, check_numerics=False)
    out["paired_old_new"] = paired({"old": Encoder(args.old, check_numerics=False), "new": new},
                                   passages, queries, args.rounds)
    r = out["paired_old_new"]
    print(f"paired (new runs {new.graph_file}): corpus new/old {r['corpus_ratio_new_over_old']:.3f}, "
          f"batch-1 speed new/old {r['batch1_speed_ratio_new_over_old']:.3f}; medians {r['median']}", flush=True)

    if host.int8_kernel_exact() and len(host.graphs(new.manifest)) > 1:
        real = host.int8_kernel_exact
        host.int8_kernel_exact = lambda: False  # as a non-VNNI host: the twin runs
        try:
            twin = Encoder(args.new, check_numerics=False)
        finally:
            host.int8_kernel_exact = real
        out["twin_vs_s8_here"] = paired({"s8": new, "twin": twin}, passages, queries, args.rounds)
        r = out["twin_vs_s8_here"]
        print(f"the twin here ({twin.graph_file}): corpus twin/s8 {r['corpus_ratio_twin_over_s8']:.3f}, "
              f"batch-1 speed twin/s8 {r['batch1_speed_ratio_twin_over_s8']:.3f}", flush=True)
    if args.fp32:
        out["int8_vs_fp32"] = paired({"fp32": Encoder(args.fp32, check_numerics=False), "int8": new},
                                     passages, queries, args.rounds)
        r = out["int8_vs_fp32"]
        print(f"int8 ({new.graph_file}) vs fp32: corpus {r['corpus_ratio_int8_over_fp32']:.3f}, "
              f"batch-1 speed {r['batch1_speed_ratio_int8_over_fp32']:.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
