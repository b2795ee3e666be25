"""Do the int8 systems keep the ranking on texts that none of them was tuned or gated on?

Answer: docs/int8.md, "Measured" ("Texts no system was tuned on").

    python benchmarks/studies/int8_agreement.py [--queries 100] [--passages 400] [-o out.json]

The texts are Python's own standard-library documentation, present on every machine:
each module docstring's summary line is a query, its other paragraphs (titled with the
module's name) are passages. Model: all-MiniLM-L6-v2 (real weights, mean pooling and
normalization, as its sentence-transformers folder says), ranked by cosine as it is
meant to be used. Reference: PyTorch fp32 eager. Per system: min and mean cosine to the
reference, overlap@10, and alone-vs-batch min cosine over 32 passages.

Systems: bowrt int8 (the MiniLM bundle, the graph this host picks), ort-qint8
(sentence-transformers' int8 model with the quantization config for this host's ISA,
``benchmarks/harness/adapters/ort_qint8.py``) and, when ``ctranslate2`` is installed,
CTranslate2's ``Encoder`` with int8 weights (the bench's ``ct2-int8``: converted by its own
converter, sentence-transformers' batching). Prints the host ISA.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness import models, systems  # noqa: E402
from benchmarks.harness.spec import SystemSpec, Unavailable  # noqa: E402
from bowrt.export.parity import compare, cosines  # noqa: E402
from bowrt.runtime import host  # noqa: E402

SKIP = ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3", "ensurepip", "pydoc_data")
ROWS = 32


def stdlib_texts(n_queries: int, n_passages: int) -> tuple[list[str], list[str]]:
    queries: list[str] = []
    passages: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names):
            if name.startswith("_") or name in SKIP:
                continue
            try:
                doc = importlib.import_module(name).__doc__ or ""
            except Exception:  # noqa: BLE001 - platform-specific modules
                continue
            paras = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
            body = [p for p in paras[1:] if 12 <= len(p.split()) <= 220]
            if len(paras) < 2 or not body or len(paras[0].split()) < 4:
                continue
            queries.append(paras[0])
            passages.extend(f"{name} {p}" for p in body)
    return queries[:n_queries], passages[:n_passages]


def metrics(sys_: Any, ref_q: np.ndarray, ref_p: np.ndarray, queries: list[str], passages: list[str]) -> dict[str, Any]:
    q, p = sys_.encode(queries, "query"), sys_.encode(passages, "passage")
    m: dict[str, Any] = compare(ref_q, ref_p, q, p)
    together = sys_.encode(passages[:ROWS], "passage")
    alone = np.concatenate([sys_.encode([t], "passage") for t in passages[:ROWS]])
    m["batch_invariance_min_cosine"] = float(cosines(alone, together).min())
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--passages", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args()
    info = host.describe()
    print(f"host: int8 ISA {info['int8_isa']} ({info['int8_accumulation']} accumulation)", flush=True)
    queries, passages = stdlib_texts(args.queries, args.passages)
    print(f"{len(queries)} queries x {len(passages)} passages from the standard library's docstrings", flush=True)
    folder = models.minilm_folder()
    bundle = models.ensure_bundles(folder, ("int8",), None, print)["int8"]
    base = SystemSpec("torch", model_dir=str(folder), threads=args.threads, pooling="mean", normalize=True,
                      query_max_length=32, passage_max_length=256)
    ref = systems.load(base)
    ref_q, ref_p = ref.encode(queries, "query"), ref.encode(passages, "passage")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        candidates = {"bowrt-int8": replace(base, name="bowrt-int8", bundle=str(bundle), model_dir=None),
                      "ort-qint8": replace(base, name="ort-qint8"), "ct2-int8": replace(base, name="ct2-int8")}
        for name, spec in candidates.items():
            try:
                _, sys_ = systems.bring_up(spec, work)
            except Unavailable as e:
                results[name] = {"status": "unavailable", "reason": str(e)}
                print(f"{name}: unavailable ({e})", flush=True)
                continue
            results[name] = metrics(sys_, ref_q, ref_p, queries, passages)
            if name == "bowrt-int8":
                results[name]["graph"] = sys_.encoder.graph_file
            r = results[name]
            print(f"{name}: min cos {r['min_cosine']:.4f}, mean cos {r['mean_cosine']:.5f}, overlap@10 "
                  f"{r['overlap_at_10']:.3f}, alone vs batch {r['batch_invariance_min_cosine']:.6f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"host": info, "queries": len(queries), "passages": len(passages),
                                        "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
