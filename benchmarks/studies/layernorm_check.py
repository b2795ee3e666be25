"""Why do the CPU bundles ship their layer norms split (bowrt/export/optimize.py)?

Answer: docs/bundle.md, "How export builds a bundle" (the layer-norm split).

    python benchmarks/studies/layernorm_check.py [--rows 13 4096] [--repeats 50] [--threads 2]

Times ONNX Runtime's fused SkipLayerNormalization against the Add + Add +
LayerNormalization it replaces, side by side in one process on one [rows, 768]
input, interleaved; prints medians and the ratio, and checks they agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from bowrt.runtime.session import ort_session
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 768


def session(nodes: list, threads: int, disabled: list[str]) -> ort.InferenceSession:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.random(HIDDEN).astype(np.float32), n) for n in ("gamma", "beta", "bias")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["rows", HIDDEN]) for n in ("x", "skip")]
    graph = helper.make_graph(nodes, "g", io, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return ort_session(model.SerializeToString(), threads=threads, disabled=disabled)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[13, 4096])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    fused = session([helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y"],
                                      domain="com.microsoft", epsilon=1e-12)], args.threads, [])
    split = session([
        helper.make_node("Add", ["x", "bias"], ["xb"]),
        helper.make_node("Add", ["xb", "skip"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12),
    ], args.threads, ["SkipLayerNormFusion"])
    rng = np.random.default_rng(1)
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, hidden {HIDDEN}, median of {args.repeats}")
    for rows in args.rows:
        feed = {"x": rng.standard_normal((rows, HIDDEN)).astype(np.float32),
                "skip": rng.standard_normal((rows, HIDDEN)).astype(np.float32)}
        diff = float(np.abs(fused.run(None, feed)[0] - split.run(None, feed)[0]).max())
        times: dict[str, list[float]] = {"fused": [], "split": []}
        for _ in range(args.repeats):
            for name, sess in (("fused", fused), ("split", split)):
                t = time.perf_counter()
                sess.run(None, feed)
                times[name].append(time.perf_counter() - t)
        f, s = (statistics.median(times[k]) * 1e3 for k in ("fused", "split"))
        print(f"rows {rows:5d}: SkipLayerNormalization {f:.3f} ms, Add+Add+LayerNormalization {s:.3f} ms, "
              f"fused/split {f / s:.2f}x, max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
