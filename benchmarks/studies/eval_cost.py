"""What does encoding a DPR-size corpus cost on this machine, fp32 against int8?

Answer: docs/eval.md, "What a corpus costs".

    python benchmarks/studies/eval_cost.py [--passages 1000] [--rounds 2] [--threads 2]

Times ``bowrt encode``'s corpus job (the path ``bowrt eval`` encodes passages with) on the
bert-base twin's fp32 and int8 bundles (bowdpr's shape; the bench cache), on passages shaped
like DPR's Wikipedia split: a title of 2-6 words and a text of about 130 tokens (a 100-word
Wikipedia passage is about that many WordPiece tokens), about 140 tokens in all (seeded
whole-word tokens of the model's own vocabulary: benchmarks/harness/workloads.py).
fp32 and int8 alternate round by round; each round is a fresh output folder (nothing
reused). Prints passages/s, seconds per 1,000 passages, and the hours the 21,015,324
passages of DPR's psgs_w100.tsv would take at that rate on one such machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness import models  # noqa: E402
from benchmarks.harness.workloads import TextMaker  # noqa: E402
from bowrt.corpus import encode_corpus  # noqa: E402
from bowrt.runtime import Encoder, host  # noqa: E402

DPR_PASSAGES = 21_015_324  # psgs_w100.tsv


def dpr_like(tokenizer: Path, n: int, seed: int = 0) -> list[dict[str, str]]:
    maker, rng = TextMaker(tokenizer, seed), np.random.default_rng(seed)
    titles = maker.texts([int(k) + 2 for k in rng.integers(2, 7, n)])
    texts = maker.texts([int(k) for k in rng.normal(132, 12, n).clip(100, 200)])
    return [{"id": str(i), "title": t, "text": x} for i, (t, x) in enumerate(zip(titles, texts))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bundles = models.ensure_bundles(models.twin_folder(print), ("fp32", "int8"), models.RANDOM_WEIGHT_GATES, print)
    encoders = {v: Encoder(p, "cpu", threads=args.threads) for v, p in bundles.items()}
    rates: dict[str, list[float]] = {v: [] for v in encoders}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "passages.jsonl"
        rows = dpr_like(Path(bundles["fp32"]) / "tokenizer.json", args.passages)
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tokens = encoders["fp32"].tokenize_passages([{"title": r["title"], "text": r["text"]} for r in rows]).lengths
        for enc in encoders.values():  # warm-up
            enc.encode_passages([rows[0]["text"]])
        for r in range(args.rounds):
            for v in (("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")):
                t0 = time.perf_counter()
                encode_corpus(encoders[v], corpus, Path(tmp) / f"{v}-{r}", progress=False)
                rates[v].append(args.passages / (time.perf_counter() - t0))
                print(f"round {r + 1}: {v} {rates[v][-1]:.1f} passages/s", file=sys.stderr, flush=True)
    print(f"{args.passages} DPR-like passages ({np.mean(tokens):.0f} tokens on average), {args.threads} threads, "
          f"{args.rounds} rounds; host: {host.summary()}\n")
    print("| bundle | passages/s | s per 1,000 passages | DPR's 21.0M passages, hours |\n|---|---|---|---|")
    for v, rs in rates.items():
        rate = statistics.median(rs)
        print(f"| {v} | {rate:.1f} [{min(rs):.1f}-{max(rs):.1f}] | {1000 / rate:.1f} | {DPR_PASSAGES / rate / 3600:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
