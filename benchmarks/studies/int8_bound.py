"""How near can bowrt int8 get to PyTorch bf16 on uniform batches? A bound from ORT's own kernel times.

Answer: docs/benchmarks.md, "What bounds int8 on 32 × 128".

    python benchmarks/studies/int8_bound.py [--rounds 5] [--threads 2]

One process, interleaved round by round, on the bench's 32 x 128 workload (32 passages
of exactly 128 tokens, the bert-base twin):

- PyTorch bf16 autocast, one call as the bench makes it;
- the bowrt int8 bundle through `Encoder` (the runtime's own batching), wall time;
- the same graph and batches in an ONNX Runtime session with the profiler on, summed by
  operator into int8 GEMM (`MatMulIntegerToFloat`, scale epilogue included) and the rest.

Per round and as medians, it prints bf16 / int8 ("achieved") and bf16 / int8-GEMM-kernels
("bound"): the ratio int8 would reach if every operator other than its GEMMs took no time.
The int8 GEMMs' rate is shown next to ORT's MatMulInteger ceiling measured in the same run
(the bench's, best of repeated calls). No assertion: this reports what bounds issue 5's
"int8 >= 1.5x PyTorch bf16 on 32 x 128" on the machine it runs on.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness import machine, models, workloads  # noqa: E402
from benchmarks.harness.adapters.pytorch import TorchSystem  # noqa: E402
from benchmarks.harness.spec import SystemSpec  # noqa: E402
from benchmarks.studies.common import Batch, feed, kernel_seconds, profiled_session  # noqa: E402
from bowrt.runtime import Encoder  # noqa: E402
from bowrt.runtime.plan import plan_batches  # noqa: E402
from bowrt.runtime.tokenize import pad_batch  # noqa: E402

GEMM_OPS = ("MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulInteger")


def pass_kernels(model: Path, threads: int, batches: list[Batch]) -> collections.Counter:
    """Kernel seconds per operator type over one pass of ``batches`` (after one warm-up pass)."""
    sess = profiled_session(model, threads, "bound")  # fresh: a session profiles until end_profiling, once
    for _ in range(2):
        for batch in batches:
            sess.run(None, feed(sess, batch))
    return kernel_seconds(sess, skip_runs=len(batches))  # from the second pass's first run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    folder = models.twin_folder(print)
    bundle = models.ensure_bundles(folder, ("fp32", "int8"), models.RANDOM_WEIGHT_GATES, print)["int8"]
    texts = workloads.make_texts(Path(bundle) / "tokenizer.json", queries=1, corpus=1).batch
    config = json.loads((folder / "config.json").read_text())
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    tokens = workloads.BATCH_TOKENS * len(texts)
    # GEMM work as the int8 graph does it: with CLS pooling the last layer's output
    # projection and FFN run on one row per text (export/optimize.py: cls_tail).
    gemm_ops = 2 * (4 * h * h + 2 * h * inter) * tokens * layers - 2 * (h * h + 2 * h * inter) * (tokens - len(texts))

    spec = SystemSpec("torch-bf16", model_dir=str(folder), threads=args.threads)
    bf16 = TorchSystem(spec, bf16=True)
    enc = Encoder(bundle, providers="cpu", threads=args.threads)
    ids = enc.tokenize_passages(texts).ids
    plan = plan_batches([len(r) for r in ids], enc.max_batch_tokens, enc.max_batch_size)
    batches = [pad_batch([ids[i] for i in b]) for b in plan]
    model = Path(bundle) / "model.onnx"
    ceiling = machine.gemm_ceilings(config, args.threads)["int8"].get("onnxruntime")
    print(f"{len(texts)} x {workloads.BATCH_TOKENS} tokens; bowrt runs it as {len(batches)} batches "
          f"(token budget {enc.max_batch_tokens}); {args.threads} threads; {args.rounds} rounds after a warm-up")

    bf16.encode(texts, "passage")
    enc.encode_passages(texts)
    rows = []
    for r in range(args.rounds):
        timed = {}
        for name in ("bf16", "int8") if r % 2 == 0 else ("int8", "bf16"):  # alternate who goes first
            t = time.perf_counter()
            bf16.encode(texts, "passage") if name == "bf16" else enc.encode_passages(texts)
            timed[name] = time.perf_counter() - t
        t_bf16, t_int8 = timed["bf16"], timed["int8"]
        k = pass_kernels(model, args.threads, batches)
        gemm = sum(v for op, v in k.items() if op in GEMM_OPS)
        rows.append({"bf16_s": t_bf16, "int8_s": t_int8, "gemm_s": gemm, "other_s": sum(k.values()) - gemm, "kernels": k})
        print(f"  round {r + 1}: bf16 {t_bf16:.3f} s, int8 {t_int8:.3f} s (kernels: GEMM {gemm:.3f} s, "
              f"other {rows[-1]['other_s']:.3f} s); achieved {t_bf16 / t_int8:.2f}x, bound {t_bf16 / gemm:.2f}x")
    med = {key: statistics.median(row[key] for row in rows) for key in ("bf16_s", "int8_s", "gemm_s", "other_s")}
    achieved = statistics.median(row["bf16_s"] / row["int8_s"] for row in rows)
    bound = statistics.median(row["bf16_s"] / row["gemm_s"] for row in rows)
    top = collections.Counter()
    for row in rows:
        top.update(row["kernels"])
    print(f"\nmedians: bf16 {med['bf16_s']:.3f} s ({len(texts) / med['bf16_s']:.1f} passages/s), "
          f"int8 {med['int8_s']:.3f} s ({len(texts) / med['int8_s']:.1f} passages/s)")
    print(f"int8 kernels: GEMM {med['gemm_s']:.3f} s ({gemm_ops / med['gemm_s'] / 1e9:.0f} GOP/s; "
          f"ORT MatMulInteger ceiling {ceiling} GOP/s), everything else {med['other_s']:.3f} s")
    print("largest non-GEMM operators (kernel s per round): " + ", ".join(
        f"{op} {v / len(rows):.3f}" for op, v in top.most_common() if op not in GEMM_OPS)[:400])
    print(f"bf16 / int8, achieved: {achieved:.2f}x; bound with every non-GEMM kernel free: {bound:.2f}x "
          f"(medians of per-round ratios; ratios of the medians: {med['bf16_s'] / med['int8_s']:.2f}x and "
          f"{med['bf16_s'] / med['gemm_s']:.2f}x; issue 5's target: 1.5x)")
    print(f"kernel times come from a profiled run: their sum ({med['gemm_s'] + med['other_s']:.3f} s) is "
          f"{(med['gemm_s'] + med['other_s']) / med['int8_s']:.2f}x the unprofiled int8 wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
