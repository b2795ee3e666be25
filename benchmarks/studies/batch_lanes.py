"""Do a call's batches run faster side by side, each on one thread (``batch_lanes``), than one
at a time on all threads? At which token budget? And do they give the same bits?

Answer: docs/benchmarks.md, "Batch lanes" and run G; the default it set is in
bowrt/runtime/lanes.py.

    python benchmarks/studies/batch_lanes.py BUNDLE [BUNDLE ...] [--passages 192] [--call 32]
        [--passes 6] [--min-tokens 20] [--max-tokens 256] [--threads 2]
        [--settings 1:512,default]

Per bundle, one Encoder per setting in one process. ``default`` is the Encoder's own
defaults; ``LANES:BUDGET[:LANE_MIN[:WIDTH:TOKENS]...]`` sets ``batch_lanes`` and
``max_batch_tokens``, then optionally the lanes' floor (batches wider than LANE_MIN tokens
run in lanes; :data:`bowrt.runtime.lanes.LANE_MIN_TOKENS`) and narrow budgets, narrowest first
(batches of rows of at most WIDTH tokens close at TOKENS; :data:`bowrt.runtime.lanes.LANE_NARROW`); a
lane runs on ``--threads`` divided by its setting's lanes. The default pair is one batch at
a time at 512 tokens against the Encoder's defaults; ``2:512:128`` is the default before the
narrow budget. The same passages (random token ids of ``--min-tokens`` to
``--max-tokens``), in calls of ``--call`` rows through ``run_tokens``, run one pass on each
setting in turn, the order rotating by one each pass, a 0.2 s pause before each pass;
each pass checks that every setting gave the same vectors: bit for bit where two settings
ran the same batches, else to a cosine of 0.99999 row by row (batch invariance). It prints
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
from bowrt.export.parity import cosines  # noqa: E402
from bowrt.runtime.encoder import Encoder  # noqa: E402
from bowrt.runtime.tokenize import Tokens  # noqa: E402


def _pass(enc: Encoder, calls: list[Tokens]) -> tuple[float, list[np.ndarray]]:
    time.sleep(0.2)
    t0 = time.perf_counter()
    out = [enc.encode_tokens(c) for c in calls]
    return time.perf_counter() - t0, out


def _settings(text: str) -> list[tuple[int, ...] | None]:
    """``default`` -> None (the Encoder's own defaults); ``LANES:BUDGET[:LANE_MIN[:WIDTH:TOKENS]...]`` -> ints."""
    try:
        items = [None if item == "default" else tuple(int(x) for x in item.split(":")) for item in text.split(",")]
    except ValueError:
        items = []
    if not items or any(t is not None and (len(t) < 2 or (len(t) > 2 and len(t) % 2 == 0) or min(t[:2]) < 1 or min(t) < 0
                                           or list(t[3::2]) != sorted(set(t[3::2]))) for t in items):
        raise SystemExit(f"--settings {text!r}: expected default or LANES:BUDGET[:LANE_MIN[:WIDTH:TOKENS]...] "
                         "(widths rising), comma-separated, e.g. 2:512:128,default")
    return items


def _name(setting: tuple[int, ...] | None) -> str:
    if setting is None:
        return "default"
    name = f"lanes {setting[0]}, {setting[1]} tokens"
    if len(setting) > 2:
        name += f", lanes above {setting[2]}"
    return name + "".join(f", {t} up to {w}" for w, t in zip(setting[3::2], setting[4::2]))


def _encoder(bundle: Path, setting: tuple[int, ...] | None, threads: int) -> Encoder:
    if setting is None:
        return Encoder(bundle, threads=threads, check_numerics=False)
    enc = Encoder(bundle, threads=threads, batch_lanes=setting[0], max_batch_tokens=setting[1], check_numerics=False)
    if len(setting) > 2 and enc._lanes is not None:
        enc._lanes.min_tokens = setting[2]
    enc.narrow_budget = tuple(zip(setting[3::2], setting[4::2]))
    return enc


def _agree(bundle: Path, name: str, p: int, same_plan: bool, ref: list[np.ndarray], vecs: list[np.ndarray]) -> bool:
    """Same batches: the same bits, or SystemExit. Other batches (another budget): cosine >= 0.99999
    row by row (bowrt's batch invariance), or SystemExit. Returns whether every bit was the same."""
    if all(np.array_equal(a, b) for a, b in zip(ref, vecs)):
        return True
    cos = min(float(cosines(a, b).min()) for a, b in zip(ref, vecs))
    if same_plan or cos < 0.99999:
        raise SystemExit(f"{bundle}: {name} gave other vectors than the other settings (pass {p + 1}; "
                         f"{'the same batches' if same_plan else 'other batches'}, min cosine {cos:.7f})")
    return False


def study(bundle: Path, args: argparse.Namespace) -> None:
    rows = [r for r in token_corpus(40 * args.passages, np.random.default_rng(1), args.max_tokens + 1)
            if len(r) >= args.min_tokens][: args.passages]
    calls = [Tokens("passage", tuple(rows[i : i + args.call])) for i in range(0, len(rows), args.call)]
    names = [_name(st) for st in args.settings]
    encs = [_encoder(bundle, st, args.threads) for st in args.settings]
    for enc in encs:
        enc.encode_tokens(calls[0])
    plans = [[enc.plan(c.lengths) for c in calls] for enc in encs]
    rates: list[list[float]] = [[] for _ in encs]
    for p in range(args.passes):
        ref, same = None, True
        for j in [(p + i) % len(encs) for i in range(len(encs))]:
            wall, vecs = _pass(encs[j], calls)
            if ref is not None:
                same = same and _agree(bundle, names[j], p, plans[j] == plans[ref[0]], ref[1], vecs)
            ref = (j, vecs)
            rates[j].append(len(rows) / wall)
        print(f"{bundle.name} pass {p + 1}: " + ", ".join(f"{n} {r[-1]:5.1f}" for n, r in zip(names, rates))
              + " passages/s, " + ("same bits" if same else "the same bits where the batches were the same"),
              flush=True)
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
    ap.add_argument("--settings", type=_settings, default=_settings("1:512,default"),
                    help="default or LANES:BUDGET[:LANE_MIN[:WIDTH:TOKENS]], comma-separated; "
                         "the first is the baseline of the paired ratios")
    args = ap.parse_args()
    for bundle in args.bundles:
        study(bundle, args)


if __name__ == "__main__":
    main()
