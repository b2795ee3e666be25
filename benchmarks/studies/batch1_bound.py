"""What bounds int8 at batch 1? The encoder's GEMMs alone, at a query's shape, against the bench's ceiling.

Answer: docs/benchmarks.md, run I, "Batch 1 and the ceiling share".

    python benchmarks/studies/batch1_bound.py TWIN_BUNDLE [TWIN_BUNDLE ...] [--queries 40] [--rounds 7] [--threads 2]

The bench's "% ceiling" at batch 1 is a query's useful FLOPs (``machine.encoder_flops``) over
its p50, divided by ONNX Runtime's MatMulInteger rate at 2048 x H x I with its weight in cache
(``machine.gemm_ceilings``). A query has 6-20 tokens, and each call reads every weight byte of
the encoder once (85 MB for bert-base) for that few rows of work. In one process, on the bench's
queries (its seeded texts, so their token counts), with the bench's ceiling measured first:

- ``GEMMs, own weights``: a graph of the encoder's int8 GEMMs and nothing else
  (``MatMulIntegerToFloat``, one A scale, per-column B scales, as bowrt's static nodes), each
  with its own random int8 weight of the model's shapes (QKV, output, FFN up and down, every
  layer; the last layer's output and FFN on one row, as bowrt's CLS tail), at M = the query's
  tokens: what any graph on these kernels and weights can do at best;
- ``GEMMs, shared weights``: the same nodes with one weight per shape (in cache): how much of
  that is reading weights from memory rather than the few rows;
- each TWIN_BUNDLE's Encoder on the same queries, one call each.

Each round runs every query on each system in turn, the order rotating a round; per system,
the median call over rounds is taken per query, then the bench's figure: mean FLOPs over the
median call, as a share of the ceiling. It also prints the GEMM graph's weight bytes per
second (every call reads them all, from memory: they do not fit in cache). No assertion: it
says how far the ceiling share at batch 1 can go on the host it runs on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness import machine, models, workloads  # noqa: E402
from bowrt.runtime import Encoder  # noqa: E402
from bowrt.runtime.session import ort_session  # noqa: E402


def gemm_graph(config: dict[str, Any], shared: bool) -> tuple[bytes, int]:
    """The encoder's int8 GEMMs only, as an ONNX model, and its weight bytes. Inputs ``A_h``
    [M, H] and ``A_i`` [M, I] (u8), ``C_h`` [1, H] and ``C_i`` [1, I] for the CLS tail."""
    from onnx import TensorProto, helper, numpy_helper

    h, inter, layers = int(config["hidden_size"]), int(config["intermediate_size"]), int(config["num_hidden_layers"])
    rng = np.random.default_rng(0)
    inits, nodes, outputs, weights = [], [], [], {}
    inits += [numpy_helper.from_array(np.array(0.01, np.float32), "a_scale"),
              numpy_helper.from_array(np.array(128, np.uint8), "a_zp")]
    shapes = [("qkv", h, 3 * h), ("out", h, h), ("up", h, inter), ("down", inter, h)]
    for layer in range(layers):
        tail = layer == layers - 1
        for name, k, n in shapes:
            w = f"w_{name}" if shared else f"w_{layer}_{name}"
            if w not in weights:
                weights[w] = k * n
                inits += [numpy_helper.from_array(rng.integers(-127, 128, size=(k, n), dtype=np.int8), w),
                          numpy_helper.from_array(np.full(n, 0.01, np.float32), f"{w}_scale")]
            a = ("C_" if tail and name != "qkv" else "A_") + ("i" if k == inter else "h")
            y = f"y_{layer}_{name}"
            nodes.append(helper.make_node("MatMulIntegerToFloat", [a, w, "a_scale", f"{w}_scale", "a_zp"], [y],
                                          domain="com.microsoft"))
            outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, None))
    inputs = [helper.make_tensor_value_info(f"{p}_{s}", TensorProto.UINT8, [rows, k])
              for p, rows in (("A", "M"), ("C", 1)) for s, k in (("h", h), ("i", inter))]
    graph = helper.make_graph(nodes, "gemms", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, 9)
    return model.SerializeToString(), sum(weights.values())


def gemm_call(model: bytes, config: dict[str, Any], threads: int) -> Callable[[int], Any]:
    sess = ort_session(model, threads=threads, disabled=())
    h, inter = int(config["hidden_size"]), int(config["intermediate_size"])
    rng = np.random.default_rng(1)
    big = {f"{p}_{s}": rng.integers(0, 256, size=(rows, k), dtype=np.uint8)
           for p, rows in (("A", 32), ("C", 1)) for s, k in (("h", h), ("i", inter))}
    return lambda m: sess.run(None, {n: (a[:m] if n.startswith("A") else a) for n, a in big.items()})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    config = json.loads((models.twin_folder(print) / "config.json").read_text())  # the bench's bert-base twin
    texts = workloads.make_texts(args.bundles[0] / "tokenizer.json", queries=args.queries, corpus=1)
    queries, lengths = texts.queries, texts.query_tokens
    ceiling = machine.gemm_ceilings(config, args.threads)["int8"].get("onnxruntime")
    own, own_bytes = gemm_graph(config, shared=False)
    shared, shared_bytes = gemm_graph(config, shared=True)
    calls: dict[str, Callable[[int], Any]] = {
        "GEMMs, own weights": (lambda f: lambda j: f(lengths[j]))(gemm_call(own, config, args.threads)),
        "GEMMs, shared weights": (lambda f: lambda j: f(lengths[j]))(gemm_call(shared, config, args.threads)),
    }
    for b in args.bundles:
        enc = Encoder(b, threads=args.threads, check_numerics=False)
        # the bench's speed bundle is int8-speed/int8
        name = f"{b.parent.name}/{b.name}" if b.parent.name.startswith("int8-") else b.name
        calls[f"Encoder {name}"] = (lambda e: lambda j: e.encode_queries([queries[j]]))(enc)
    print(f"{len(queries)} queries of {min(lengths)}-{max(lengths)} tokens (mean {np.mean(lengths):.1f}); "
          f"{args.threads} threads; ceiling (ORT MatMulInteger, 2048 x {config['hidden_size']} x "
          f"{config['intermediate_size']}): {ceiling} GOP/s; weights {own_bytes / 1e6:.0f} MB own, "
          f"{shared_bytes / 1e6:.1f} MB shared", flush=True)
    names = list(calls)
    ms: dict[str, list[list[float]]] = {n: [[] for _ in queries] for n in names}
    for f in calls.values():  # warm-up
        for j in range(len(queries)):
            f(j)
    for r in range(args.rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            for j in range(len(queries)):
                t = time.perf_counter()
                calls[n](j)
                ms[n][j].append((time.perf_counter() - t) * 1e3)
    flops = machine.encoder_flops(config, lengths) / len(lengths)
    for n in names:
        per_query = [statistics.median(x) for x in ms[n]]
        p50 = statistics.median(per_query)
        extra = ""
        if n == "GEMMs, own weights":
            extra = f"; its {own_bytes / 1e6:.0f} MB of weights read at {own_bytes / (p50 / 1e3) / 1e9:.1f} GB/s"
        print(f"  {n}: p50 {p50:.2f} ms, {flops / (p50 / 1e3) / 1e9 / ceiling:.1%} of the ceiling{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
