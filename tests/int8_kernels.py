"""Run int8 GEMMs through ONNX Runtime on adversarial inputs and compare with numpy's exact
int32 products. Imported by the tests, and run as a script under an emulated CPU
(``qemu-x86_64-static -cpu Haswell python tests/int8_kernels.py WEIGHTS.npz``: an AVX2-only
x86, whose u8 x s8 kernel adds products in saturating int16 pairs) to prove the same on a
CPU the test host does not have. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys

import numpy as np

# Rows per run: 1 (MLAS's matrix-vector kernel), 4 and 33 (the matrix kernel, a full and a
# ragged block of rows).
ROWS = (1, 4, 33)


def adversarial_inputs(w: np.ndarray, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 activations [rows, K] that push a saturating kernel hardest: all 255, all 0,
    alternating 0/255, the worst case of a column (255 where its weight is positive, 0
    elsewhere, and the reverse), and uniform random bytes."""
    k = w.shape[0]
    col = int(np.argmax(np.abs(w.astype(np.int32)).sum(0)))
    worst_pos = np.where(w[:, col] > 0, 255, 0).astype(np.uint8)
    out = {
        "all_255": np.full((rows, k), 255, np.uint8),
        "all_0": np.zeros((rows, k), np.uint8),
        "alternating": np.tile(np.array([0, 255], np.uint8), (rows, k // 2 + 1))[:, :k],
        "worst_column_pos": np.tile(worst_pos, (rows, 1)),
        "worst_column_neg": np.tile(255 - worst_pos, (rows, 1)),
        "random": np.random.default_rng(seed).integers(0, 256, (rows, k), dtype=np.uint8),
    }
    return out


def matmul_integer(w: np.ndarray, zero_point: int | None = None) -> bytes:
    """``Y = MatMulInteger(A, W)`` with ``w`` (int8 or uint8) as a constant initializer, as the
    exported graphs hold their weights (ONNX Runtime pre-packs constant weights)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(w, "W")]
    inputs = ["A", "W"]
    if zero_point is not None:
        inits += [numpy_helper.from_array(np.array(0, np.uint8), "a_zp"),
                  numpy_helper.from_array(np.array(zero_point, w.dtype), "w_zp")]
        inputs += ["a_zp", "w_zp"]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["Y"])], "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, w.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, w.shape[1]])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def exactness(w: np.ndarray, zero_point: int | None = None) -> dict[str, bool]:
    """For each adversarial input and row count: did ONNX Runtime's int32 result equal numpy's?"""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(matmul_integer(w, zero_point), so, providers=["CPUExecutionProvider"])
    ref_w = w.astype(np.int64) - (zero_point or 0)
    out = {}
    for rows in ROWS:
        for name, a in adversarial_inputs(w, rows).items():
            got = sess.run(None, {"A": a})[0]
            out[f"{name}/{rows}"] = bool(np.array_equal(got, a.astype(np.int64) @ ref_w))
    return out


def main(path: str) -> None:
    from bowrt.runtime import host

    weights = np.load(path)
    result = {"kernel_exact": host.int8_kernel_exact()}
    for name in weights.files:
        w = weights[name]
        zp = 128 if w.dtype == np.uint8 else None
        result[name] = exactness(w, zp)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
