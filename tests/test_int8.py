"""bowrt's int8 (issue 7): batch-invariant and ranking-faithful.

Batch invariance is checked through the public runtime: the same text encoded
alone and inside batches of 1..64 mixed-length texts. Agreement is checked
against PyTorch fp32 (transformers, independent of the export code) on the
probe set, for CLS and mean pooling of the real-weights model.
"""

from __future__ import annotations

import numpy as np
import pytest

from bowrt import Encoder
from bowrt.bundle import read_manifest
from bowrt.export import export_model
from bowrt.export.parity import cosines, overlap_at_k
from bowrt.export.probes import load_text_set
from reference import torch_reference

BATCH_SIZES = (1, 2, 3, 7, 16, 33, 64)


def mixed_passages(n: int = 64) -> list[tuple[str, str]]:
    probes = load_text_set("probes")
    return [probes.passages[i % len(probes.passages)] for i in range(n)]


def assert_batch_invariant(bundle, min_cos: float = 0.99999) -> float:
    # max_batch_size=64 so a batch really holds up to 64 rows of mixed lengths.
    enc = Encoder(bundle, max_batch_tokens=64 * 256, max_batch_size=64)
    passages = mixed_passages(64)
    alone = np.concatenate([enc.encode_passages([p]) for p in passages])
    worst = 1.0
    for size in BATCH_SIZES:
        for start in range(0, 64, size):
            chunk = passages[start : start + size]
            got = enc.encode_passages(chunk)
            worst = min(worst, float(cosines(alone[start : start + len(chunk)], got).min()))
    assert worst >= min_cos, f"alone vs batched min cosine {worst:.7f} < {min_cos}"
    return worst


def test_int8_is_batch_invariant_on_real_weights(minilm_bundles):
    assert_batch_invariant(minilm_bundles["int8"])


@pytest.mark.slow
def test_int8_is_batch_invariant_on_bert_base_twin(twin_bundles):
    assert_batch_invariant(twin_bundles["int8"])


def test_queries_are_batch_invariant_too(minilm_bundles):
    enc = Encoder(minilm_bundles["int8"])
    queries = list(load_text_set("probes").queries)
    alone = np.concatenate([enc.encode_queries([q]) for q in queries])
    assert cosines(alone, enc.encode_queries(queries)).min() >= 0.99999


@pytest.fixture(scope="module")
def minilm_cls_bundles(minilm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm-cls") / "b"
    export_model(str(minilm_dir), out, ("int8",), pooling="cls", force=True, log=lambda _m: None)
    return {"int8": out / "int8"}


def agreement(model_dir, bundle, pooling: str) -> tuple[float, float]:
    probes = load_text_set("probes")
    queries = list(probes.queries)
    passages = [f"{t} {x}" if t else x for t, x in probes.passages]
    ref_q = torch_reference(model_dir, queries, 32, pooling)
    ref_p = torch_reference(model_dir, passages, 256, pooling)
    enc = Encoder(bundle)
    q = enc.encode_queries(queries, normalize=False)
    p = enc.encode_passages(list(probes.passages), normalize=False)
    min_cos = float(min(cosines(ref_q, q).min(), cosines(ref_p, p).min()))
    return min_cos, overlap_at_k(ref_q, ref_p, q, p, 10)


@pytest.fixture(scope="module")
def real_weight_agreement(minilm_dir, minilm_bundles, minilm_cls_bundles):
    bundles = {"mean": minilm_bundles["int8"], "cls": minilm_cls_bundles["int8"]}
    for pooling, bundle in bundles.items():
        assert read_manifest(bundle).pooling == pooling
    return {pooling: agreement(minilm_dir, bundle, pooling) for pooling, bundle in bundles.items()}


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_int8_min_cosine_on_real_weights(pooling, real_weight_agreement):
    min_cos, _ = real_weight_agreement[pooling]
    assert min_cos >= 0.995, f"{pooling}: min cosine {min_cos:.5f}"


# Known gap (issue 7): measured 0.965 (mean) and 0.967 (CLS) on this CPU, against a
# target of 0.97; ONNX Runtime's standard dynamic int8 gives 0.948 (mean). strict=True:
# the day the method reaches the target, this test fails until the marker is removed.
@pytest.mark.xfail(strict=True, reason="int8 overlap@10 target 0.97 not reached yet (0.965 mean / 0.967 CLS)")
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_int8_overlap_on_real_weights(pooling, real_weight_agreement):
    _, overlap = real_weight_agreement[pooling]
    assert overlap >= 0.97, f"{pooling}: overlap@10 {overlap:.3f}"


def test_int8_beats_the_issue_2_gate_on_ranking(real_weight_agreement):
    for pooling, (_, overlap) in real_weight_agreement.items():
        assert overlap >= 0.95, f"{pooling}: overlap@10 {overlap:.3f}"


def test_manifest_records_method_and_calibration(minilm_bundles):
    q = read_manifest(minilm_bundles["int8"]).quantization
    assert q["method"] == "smoothquant"
    assert "per-token" in q["activations"]
    cal = q["calibration"]
    assert cal["queries"] + cal["passages"] == 96 and len(cal["sha256"]) == 64
    assert cal["search"] and all("min_cosine" in step for step in cal["search"])


def test_standard_dynamic_int8_is_not_batch_invariant(minilm_dir, tmp_path):
    """The baseline this method replaces really has the defect (else the test above proves nothing)."""
    export_model(str(minilm_dir), tmp_path / "b", ("int8",), int8_method="dynamic", force=True,
                 gates=["int8.min_cosine=0", "int8.overlap_at_10=0"], log=lambda _m: None)
    with pytest.raises(AssertionError, match="alone vs batched"):
        assert_batch_invariant(tmp_path / "b" / "int8")
