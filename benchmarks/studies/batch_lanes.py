"""Do a call's batches run faster side by side, each on one thread (``batch_lanes``), than one
at a time on all threads? At which token budget? And do they give the same bits?

Answer: docs/benchmarks.md, "Batch lanes" and run G; the default it set is in
bowrt/runtime/lanes.py.

    python benchmarks/studies/batch_lanes.py BUNDLE [BUNDLE ...] [--passages 192] [--call 32]
        [--passes 6] [--min-tokens 20] [--max-tokens 256] [--threads 2]
        [--settings 1:512,2:512] [--lane-min-tokens N]

Per bundle, one Encoder per setting ``LANES:BUDGET`` in one process (``batch_lanes`` and
``max_batch_tokens``; the default pair is one batch at a time against two lanes, both at
the 512-token budget; a lane runs on ``--threads`` divided by its setting's lanes). The same passages (random token ids of ``--min-tokens`` to
``--max-tokens``), in calls of ``--call`` rows through ``run_tokens``, run one pass on each
setting in turn, the order rotating by one each pass, a 0.2 s pause before each pass;
each pass checks that every setting gave the same vectors, bit for bit. ``--lane-min-tokens``
overrides :data:`bowrt.runtime.lanes.LANE_MIN_TOKENS` (0: lanes take every batch). It prints
the rate of every pass, the medians, and each setting's paired median ratio over the first
setting, pass by pass.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.studies.common import token_corpus  # noqa: E402
import bowrt.runtime.lanes as lanes_module  # noqa: E402
from bowrt.runtime.encoder import Encoder  # noqa: E402
from bowrt.runtime.tokenize import Tokens  # noqa: E402


def _pass(enc: Encoder, calls: list[Tokens]) -> tuple[float, list[np.ndarray]]:
    time.sleep(0.2)
    t0 = time.perf_counter()
    out = [enc.encode_tokens(c) for c in calls]
    return time.perf_counter() - t0, out


def _settings(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(x) for x in item.split(":")) for item in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise SystemExit(f"--settings {text!r}: expected LANES:BUDGET[,LANES:BUDGET...], e.g. 1:512,2:256")
    return pairs  # type: ignore[return-value]


def study(bundle: Path, args: argparse.Namespace) -> None:
    rows = [r for r in token_corpus(40 * args.passages, np.random.default_rng(1), args.max_tokens + 1)
            if len(r) >= args.min_tokens][: args.passages]
    calls = [Tokens("passage", tuple(rows[i : i + args.call])) for i in range(0, len(rows), args.call)]
    names = [f"lanes {k}, {b} tokens" for k, b in args.settings]
    encs = [Encoder(bundle, threads=args.threads, batch_lanes=k, max_batch_tokens=b, check_numerics=False)
            for k, b in args.settings]
    for enc in encs:
        enc.encode_tokens(calls[0])
    rates: list[list[float]] = [[] for _ in encs]
    for p in range(args.passes):
        ref = None
        for j in [(p + i) % len(encs) for i in range(len(encs))]:
            wall, vecs = _pass(encs[j], calls)
            if ref is not None and not all(np.array_equal(a, b) for a, b in zip(ref, vecs)):
                raise SystemExit(f"{bundle}: {names[j]} gave other vectors than the other settings (pass {p + 1})")
            ref = vecs
            rates[j].append(len(rows) / wall)
        print(f"{bundle.name} pass {p + 1}: " + ", ".join(f"{n} {r[-1]:5.1f}" for n, r in zip(names, rates))
              + " passages/s, same bits", flush=True)
    print(f"{bundle} ({len(rows)} passages of {args.min_tokens}-{args.max_tokens} tokens, calls of {args.call}, "
          f"{args.passes} passes):")
    for n, r in zip(names, rates):
        ratio = np.array(r) / np.array(rates[0])
        print(f"  {n}: {min(r):.1f}-{max(r):.1f} passages/s (median {np.median(r):.1f}); over {names[0]}, "
              f"paired median {np.median(ratio):.2f}x [{ratio.min():.2f}-{ratio.max():.2f}]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--passages", type=int, default=192)
    ap.add_argument("--call", type=int, default=32, help="rows per run_tokens call")
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--min-tokens", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", type=_settings, default=_settings("1:512,2:512"),
                    help="LANES:BUDGET pairs; the first is the baseline of the paired ratios")
    ap.add_argument("--lane-min-tokens", type=int, default=None,
                    help="override LANE_MIN_TOKENS (0: lanes take every batch)")
    args = ap.parse_args()
    if args.lane_min_tokens is not None:
        lanes_module.LANE_MIN_TOKENS = args.lane_min_tokens
    for bundle in args.bundles:
        study(bundle, args)


if __name__ == "__main__":
    main()
