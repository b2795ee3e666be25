"""``bowrt eval``'s command line: its options and its handler (``bowrt.cli`` adds them to ``bowrt``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bowrt.options import parse_providers


def run(args: argparse.Namespace) -> int:
    from bowrt.eval import EvalSettings, evaluate

    settings = EvalSettings(split=args.split, depth=args.depth, backend=args.backend, bootstrap=args.bootstrap,
                            shard_size=args.shard_size, progress=not args.no_progress)
    res = evaluate(args.bundles, args.data, args.out, settings, passages=args.passages, questions=args.questions,
                   providers=parse_providers(args.providers), threads=args.threads, log=lambda m: print(m, file=sys.stderr))
    from bowrt.eval.report import markdown

    print(markdown(res).rstrip())
    print(f"\nwrote {Path(args.out) / 'eval.json'}, {Path(args.out) / 'eval.md'}"
         + ("" if res.get("plot_note") else f", {Path(args.out) / 'recall.png'}"))
    return 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser("eval", help="retrieval quality of bundles on a labelled set (BEIR or DPR layout)",
                       description="Encode a labelled set with each bundle, search exactly, and report Recall@k, "
                                   "MRR@10 and nDCG@10 (BEIR) or top-k answer accuracy (DPR); every bundle after "
                                   "the first is compared with the first (overlap, paired bootstrap intervals, "
                                   "changed queries). Passage vectors are kept in OUT/vectors/ and reused.")
    s.add_argument("bundles", nargs="+", metavar="BUNDLE")
    s.add_argument("--data", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a DPR folder "
                                  "(passages.tsv and one questions file)")
    s.add_argument("--passages", help="DPR: the passage TSV (id, text, title), with --questions instead of --data")
    s.add_argument("--questions", help="DPR: questions and answers (*.qa.csv, .tsv or .jsonl)")
    s.add_argument("-o", "--out", required=True, help="output folder: eval.json, eval.md, recall.png, vectors/")
    s.add_argument("--split", default="test", help="BEIR qrels split (default %(default)s)")
    s.add_argument("--depth", type=int, default=100, help="passages retrieved per query (default %(default)s)")
    s.add_argument("--backend", choices=("numpy", "faiss"), default="numpy",
                   help="exact search: numpy, chunked (default), or faiss-cpu's IndexFlatIP")
    s.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples (default %(default)s)")
    s.add_argument("--shard-size", type=int, default=10_000, metavar="N", help="passage vectors per shard")
    s.add_argument("--providers", help="cpu, cuda, tensorrt, or a comma-separated preference list")
    s.add_argument("--threads", type=int, metavar="N", help="ORT intra-op threads")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(handler=run)
