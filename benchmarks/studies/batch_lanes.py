"""Do a call's batches run faster side by side, each on one thread (``batch_lanes``), than one
at a time on all threads? And do they give the same bits?

Answer: docs/benchmarks.md, "Batch lanes"; the default it set is in bowrt/runtime/lanes.py.

    python benchmarks/studies/batch_lanes.py BUNDLE [BUNDLE ...] [--passages 192] [--call 32]
        [--passes 6] [--min-tokens 20] [--max-tokens 256] [--threads 2]

Per bundle, two Encoders of it in one process: ``batch_lanes=1`` (one batch at a time on
``--threads`` threads) and ``batch_lanes=--threads`` (one lane per thread). The same
passages (random token ids of ``--min-tokens`` to ``--max-tokens``), in calls of ``--call``
rows through ``run_tokens``, run one pass on each in turn, a 0.2 s pause before each pass;
each pass checks that both gave the same vectors, bit for bit. It prints the rate of every
pass, the medians, and the paired median ratio (lanes over one at a time, pass by pass).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.studies.common import token_corpus  # noqa: E402
from bowrt.runtime.encoder import Encoder  # noqa: E402
from bowrt.runtime.tokenize import Tokens  # noqa: E402


def _pass(enc: Encoder, calls: list[Tokens]) -> tuple[float, list[np.ndarray]]:
    time.sleep(0.2)
    t0 = time.perf_counter()
    out = [enc.encode_tokens(c) for c in calls]
    return time.perf_counter() - t0, out


def study(bundle: Path, args: argparse.Namespace) -> None:
    rows = [r for r in token_corpus(40 * args.passages, np.random.default_rng(1), args.max_tokens + 1)
            if len(r) >= args.min_tokens][: args.passages]
    calls = [Tokens("passage", tuple(rows[i : i + args.call])) for i in range(0, len(rows), args.call)]
    one = Encoder(bundle, threads=args.threads, batch_lanes=1, check_numerics=False)
    lanes = Encoder(bundle, threads=args.threads, batch_lanes=args.threads, check_numerics=False)
    for enc in (one, lanes):
        enc.encode_tokens(calls[0])
    rates: dict[str, list[float]] = {"one": [], "lanes": []}
    for p in range(args.passes):
        w1, v1 = _pass(one, calls)
        w2, v2 = _pass(lanes, calls)
        if not all(np.array_equal(a, b) for a, b in zip(v1, v2)):
            raise SystemExit(f"{bundle}: lanes gave other vectors than one batch at a time (pass {p + 1})")
        rates["one"].append(len(rows) / w1)
        rates["lanes"].append(len(rows) / w2)
        print(f"{bundle.name} pass {p + 1}: one at a time {rates['one'][-1]:5.1f} passages/s, "
              f"lanes {rates['lanes'][-1]:5.1f}, same bits", flush=True)
    ratio = np.array(rates["lanes"]) / np.array(rates["one"])
    print(f"{bundle} ({len(rows)} passages of {args.min_tokens}-{args.max_tokens} tokens, calls of {args.call}): "
          f"one at a time {min(rates['one']):.1f}-{max(rates['one']):.1f} (median {np.median(rates['one']):.1f}), "
          f"lanes {min(rates['lanes']):.1f}-{max(rates['lanes']):.1f} (median {np.median(rates['lanes']):.1f}); "
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
    args = ap.parse_args()
    for bundle in args.bundles:
        study(bundle, args)


if __name__ == "__main__":
    main()
