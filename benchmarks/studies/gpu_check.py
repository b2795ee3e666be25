"""Do the Encoder's GPU paths (CUDA with IO binding, TensorRT) match CPU fp32, and how fast are they?

Answer: docs/serving.md, "GPU paths" (not run yet: no GPU has been lent to this project).

    python benchmarks/studies/gpu_check.py                      # fp32 + fp16 bundles of the bert-base twin (exported once, cached)
    python benchmarks/studies/gpu_check.py --bundles bundles/   # takes bundles/fp32 and bundles/fp16
    python benchmarks/studies/gpu_check.py --model ./bowdpr --json gpu.json

For each of CUDA fp32, CUDA fp16 and TensorRT fp16: the provider really used,
load time, first-call time (TensorRT builds its engine there), min cosine and
overlap@10 against CPU fp32 on the same texts, batch-1 latency (p50, p99) and
corpus throughput. Needs onnxruntime-gpu; without a CUDA provider it says so
and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

LATENCY_CALLS = 100
CORPUS = 512
RUNS = (("cuda", "fp32"), ("cuda", "fp16"), ("tensorrt", "fp16"))


def _bundles(args: argparse.Namespace) -> dict[str, Path]:
    if args.bundles:
        root = Path(args.bundles)
        found = {v: root / v for v in ("fp32", "fp16") if (root / v / "manifest.json").is_file()}
        if "fp32" not in found:
            sys.exit(f"gpu_check: {root} has no fp32/ bundle (expected {root}/fp32 and {root}/fp16)")
        return found
    from benchmarks.harness import models

    model = Path(args.model) if args.model else models.twin_folder(print)
    gates = None if args.model else models.RANDOM_WEIGHT_GATES
    return models.ensure_bundles(model, ("fp32", "fp16"), gates, print)


def _measure(enc, texts, ref_q: np.ndarray, ref_p: np.ndarray) -> dict[str, float]:
    from bowrt.export.parity import cosines, overlap_at_k

    q = enc.encode_queries(texts.queries)
    p = enc.encode_passages(texts.corpus)
    lat = []
    for i in range(LATENCY_CALLS + 5):
        t0 = time.perf_counter()
        enc.encode_queries([texts.queries[i % len(texts.queries)]])
        lat.append((time.perf_counter() - t0) * 1000)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        enc.encode_passages(texts.corpus)
        runs.append(time.perf_counter() - t0)
    lat = lat[5:]
    return {
        "min_cosine": float(min(cosines(ref_q, q).min(), cosines(ref_p, p).min())),
        "overlap_at_10": overlap_at_k(ref_q, ref_p, q, p, 10),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "passages_per_s": len(texts.corpus) / float(np.median(runs)),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", help="folder holding fp32/ and fp16/ bundles (default: export them)")
    ap.add_argument("--model", help="local model folder to export (default: the bert-base twin)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        print(f"gpu_check: no CUDA provider in this onnxruntime ({ort.__version__}; providers: {available}). "
              "Install onnxruntime-gpu (pip install 'bowrt[gpu]') on a machine with an NVIDIA GPU and its CUDA/cuDNN "
              "libraries; nothing was run.", file=sys.stderr)
        return 2

    from benchmarks.harness.workloads import make_texts
    from bowrt.runtime import Encoder

    bundles = _bundles(args)
    texts = make_texts(bundles["fp32"] / "tokenizer.json", queries=64, corpus=CORPUS)
    print(f"CPU fp32 reference on {len(texts.queries)} queries and {CORPUS} passages ...", flush=True)
    cpu = Encoder(bundles["fp32"], providers="cpu")
    ref_q, ref_p = cpu.encode_queries(texts.queries), cpu.encode_passages(texts.corpus)
    results: dict[str, dict] = {}
    for provider, variant in RUNS:
        key = f"{provider}-{variant}"
        if variant not in bundles:
            results[key] = {"skipped": f"no {variant} bundle"}
            continue
        if provider == "tensorrt" and "TensorrtExecutionProvider" not in available:
            results[key] = {"skipped": "no TensorRT provider in this onnxruntime"}
            continue
        print(f"{key} ...", flush=True)
        t0 = time.perf_counter()
        enc = Encoder(bundles[variant], providers=provider)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc.encode_passages(texts.corpus[:8])
        first_s = time.perf_counter() - t0
        results[key] = {"provider_used": enc.provider, "providers": enc.providers, "load_s": load_s,
                        "first_call_s": first_s, **_measure(enc, texts, ref_q, ref_p)}
    print(f"\n{'run':<16} {'provider':<10} {'load s':>7} {'1st call s':>10} {'min cos':>9} {'ovl@10':>7} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'passages/s':>11}")
    for key, r in results.items():
        if "skipped" in r:
            print(f"{key:<16} skipped: {r['skipped']}")
            continue
        print(f"{key:<16} {r['provider_used']:<10} {r['load_s']:7.2f} {r['first_call_s']:10.2f} {r['min_cosine']:9.6f} "
              f"{r['overlap_at_10']:7.3f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['passages_per_s']:11.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"bundles": {k: str(v) for k, v in bundles.items()}, "results": results},
                                              indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
