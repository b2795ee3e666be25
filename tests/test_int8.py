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
from bowrt.errors import OptionError
from bowrt.export import export_model, int8
from bowrt.export.int8 import best_step
from bowrt.export.int8.builder import GraphBuilder
from bowrt.export.parity import cosines, overlap_at_k
from bowrt.export.probes import load_text_set
from bowrt.runtime.lanes import LANE_NARROW
from tests.reference import torch_reference
from tests.tolerances import BATCH_INVARIANT_MIN_COS, INT8_MIN_COS, INT8_OVERLAP_AT_10

BATCH_SIZES = (1, 2, 3, 7, 16, 33, 64)


def mixed_passages(n: int = 64) -> list[tuple[str, str]]:
    probes = load_text_set("probes")
    return [probes.passages[i % len(probes.passages)] for i in range(n)]


def assert_batch_invariant(bundle, min_cos: float = BATCH_INVARIANT_MIN_COS) -> float:
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


def assert_lanes_are_exact(bundle) -> None:
    """Batches side by side in lanes, each on one thread (runtime/lanes.py), give the very bits
    of one batch at a time on two threads for the same plan, and batch-invariant vectors against
    the 512-token plan without the narrow budgets: an even and an odd count of batches (the odd
    one ends on the Encoder's own session), short rows only (in lanes too, at their narrow
    budget), a call of one batch (on the Encoder's own session)."""
    probes = mixed_passages(64)
    long = [(t, " ".join(x for _, x in probes[i : i + 6])) for i, (t, _) in enumerate(probes[:24])]
    passages = [p for pair in zip(long, probes[24:48]) for p in pair] + probes[48:]
    lanes = Encoder(bundle, threads=2)
    same_plan = Encoder(bundle, threads=2, batch_lanes=1)
    same_plan.narrow_budget = lanes.narrow_budget
    wide = Encoder(bundle, threads=2, batch_lanes=1, max_batch_tokens=512)
    assert (same_plan.batch_lanes, lanes.batch_lanes) == (1, 2) and lanes.narrow_budget == LANE_NARROW
    lane_runs = []
    real = lanes._lanes.session.run
    lanes._lanes.session.run = lambda ids, mask: lane_runs.append(ids.shape) or real(ids, mask)
    short = [p for p in probes if lanes.token_count(p) <= LANE_NARROW[-1][0]][:20]
    assert len(short) >= 8
    for chunk, in_lanes in ((passages, True), (passages[:23], True), (short, True), (passages[:1], False)):
        tokens = lanes.tokenize_passages(chunk)
        seen: list[tuple[int, int, int]] = []
        lane_runs.clear()
        got = lanes.run_tokens(tokens, on_batch=lambda *a: seen.append(a))
        want = same_plan.run_tokens(tokens)
        np.testing.assert_array_equal(got.vectors, want.vectors)
        # Other batches (the 512-token plan): equal up to batch invariance, as any other batching.
        assert cosines(got.vectors, wide.encode_tokens(tokens)).min() >= BATCH_INVARIANT_MIN_COS
        assert got.timings.batches == want.timings.batches == len(seen)
        assert got.timings.padded_tokens == want.timings.padded_tokens
        assert [s[0] for s in seen] == list(range(1, len(seen) + 1)) and seen[-1][2] == len(chunk)
        assert bool(lane_runs) == in_lanes and len(lane_runs) % 2 == 0, lane_runs
        assert got.timings.batches - len(lane_runs) <= 1  # at most the odd last batch on the main session
        narrow = [(r, w) for r, w in lane_runs if w <= LANE_NARROW[-1][0]]
        assert all(r == 1 or r * w <= next(t for x, t in LANE_NARROW if w <= x) for r, w in narrow), narrow


def test_lanes_are_exact_on_real_weights(minilm_bundles):
    assert_lanes_are_exact(minilm_bundles["int8"])


@pytest.mark.slow
def test_lanes_are_exact_on_bert_base_twin(twin_bundles):
    assert_lanes_are_exact(twin_bundles["int8"])


def test_lanes_default_and_options(minilm_bundles):
    assert Encoder(minilm_bundles["int8"], threads=2).batch_lanes == 2  # int8 on CPU: one lane per thread
    assert Encoder(minilm_bundles["int8"], threads=1).batch_lanes == 1
    fp32 = Encoder(minilm_bundles["fp32"], threads=2)
    assert fp32.batch_lanes == 1 and fp32.info["batch_lanes"] == 1  # measured not to pay for fp32
    assert fp32.narrow_budget == () and fp32.info["narrow_budget"] == []  # no lanes: one budget
    int8_default = Encoder(minilm_bundles["int8"], threads=2)
    assert int8_default.narrow_budget == LANE_NARROW and int8_default.info["narrow_budget"] == [
        [64, 128], [128, 256], [192, 384]]
    assert Encoder(minilm_bundles["int8"], threads=2, max_batch_tokens=512).narrow_budget == ()  # asked: for all rows
    # 200 tokens: two at 512; 150: two at 384, not three; 100: two at 256; 20: six at 128.
    assert int8_default.plan([20] * 12 + [100] * 5 + [150] * 3 + [200] * 4) == [
        [20, 21], [22, 23], [17, 18], [19, 12], [13, 14], [15, 16], [0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert "batch_lanes=3" in repr(Encoder(minilm_bundles["fp32"], threads=2, batch_lanes=3))
    for bad in (0, "2", 1.5, True):
        with pytest.raises(OptionError, match="batch_lanes"):
            Encoder(minilm_bundles["int8"], batch_lanes=bad)


def test_a_failing_lane_fails_the_call_not_the_encoder(minilm_bundles):
    enc = Encoder(minilm_bundles["int8"], threads=2, max_batch_tokens=512)
    probes = mixed_passages(40)
    passages = probes + [(t, " ".join(x for _, x in probes[i : i + 8])) for i, (t, _) in enumerate(probes[:8])]
    want = enc.encode_passages(passages)
    lane = enc._lanes.session
    real = lane.run

    def flaky(ids, mask):
        if ids.shape[1] > 200:
            raise RuntimeError("lane fault")
        return real(ids, mask)

    lane.run = flaky
    try:
        with pytest.raises(RuntimeError, match="lane fault"):
            enc.encode_passages(passages)
    finally:
        del lane.run
    np.testing.assert_array_equal(enc.encode_passages(passages), want)


def test_queries_are_batch_invariant_too(minilm_bundles):
    enc = Encoder(minilm_bundles["int8"])
    queries = list(load_text_set("probes").queries)
    alone = np.concatenate([enc.encode_queries([q]) for q in queries])
    assert cosines(alone, enc.encode_queries(queries)).min() >= BATCH_INVARIANT_MIN_COS


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
    assert min_cos >= INT8_MIN_COS, f"{pooling}: min cosine {min_cos:.5f}"


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_int8_overlap_on_real_weights(pooling, real_weight_agreement):
    _, overlap = real_weight_agreement[pooling]
    assert overlap >= INT8_OVERLAP_AT_10, f"{pooling}: overlap@10 {overlap:.3f}"


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_int8_manifest_figures_are_what_the_bundle_does(pooling, real_weight_agreement, minilm_bundles,
                                                        minilm_cls_bundles):
    """The manifest's parity figures, recomputed independently (tests/reference.py's PyTorch,
    the runtime's Encoder) on the same probe set: a manifest that flattered its graph fails."""
    bundle = minilm_bundles["int8"] if pooling == "mean" else minilm_cls_bundles["int8"]
    recorded = read_manifest(bundle).parity["metrics"]
    min_cos, overlap = real_weight_agreement[pooling]
    assert abs(recorded["min_cosine"] - min_cos) <= 1e-4, (recorded["min_cosine"], min_cos)
    assert abs(recorded["overlap_at_10"] - overlap) <= 0.01, (recorded["overlap_at_10"], overlap)


def test_manifest_records_method_and_calibration(minilm_bundles):
    q = read_manifest(minilm_bundles["int8"]).quantization
    assert q["method"] == "smoothquant"
    assert "per-token" in q["activations"]
    cal = q["calibration"]
    assert cal["queries"] + cal["passages"] == 96 and len(cal["sha256"]) == 64
    assert cal["search"] and all("min_cosine" in step for step in cal["search"])
    assert cal["tokens"] > 0 and "GPTQ" in q["weights"]
    assert set(q["activation_modes"].values()) <= set(int8.MODES_ACT)
    assert len(q["activation_modes"]) == q["quantized_nodes"] + len(q["fp32_nodes"])
    # Nodes kept in fp32 come from the search steps, which follow the measured sensitivity
    # ranking, most effective first.
    kept = q["fp32_nodes"]
    chosen = cal["chosen_step"]
    assert chosen == best_step(cal["search"], cal["search_target"])
    moves = cal["search"][1 : chosen + 1]
    assert len(kept) == cal["search"][chosen]["fp32_nodes"] <= cal["max_fp32_nodes"]
    assert kept == sorted(m["node"] for m in moves if m["to"] == "fp32")
    if moves:
        ranked = [row["node"] for row in cal["sensitivity"]]
        positions = [ranked.index(m["node"]) for m in moves]
        assert positions == sorted(positions)
        errors = [row["error_left_if_fp32"] for row in cal["sensitivity"]]
        assert errors == sorted(errors) and errors[0] < cal["error_all_quantized"]


def test_speed_profile_is_all_static_with_biases_in_the_gemm_and_exactly_batch_invariant(minilm_dir, tmp_path):
    """--int8-profile speed (no gate here, so no search): every node on one calibrated
    activation scale, recorded as such; each static GEMM followed by a layer norm, and each
    QKV projection, adds its bias in its own epilogue, so no bias Add and no Q/V Add is left;
    and exactly batch-invariant."""
    import onnx

    export_model(str(minilm_dir), tmp_path / "b", ("int8",), int8_profile="speed", force=True,
                 gates=["int8.min_cosine=0", "int8.overlap_at_10=0"], log=lambda _m: None)
    q = read_manifest(tmp_path / "b" / "int8").quantization
    assert q["profile"] == "speed" and q["calibration"]["static_tolerance"] == "inf"
    assert set(q["activation_modes"].values()) == {"static"}
    graph = onnx.load(str(tmp_path / "b" / "int8" / "model.onnx")).graph
    gemms = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    with_bias = [n for n in gemms if len(n.input) > 6 and n.input[6]]
    layers = sum(1 for n in graph.node if n.op_type == "QAttention")  # the QKV GEMM, its bias and attention in one
    assert layers == 6 and not [n for n in graph.node if n.op_type in ("Attention", "Split")]
    assert len(gemms) == 3 * layers and len(with_bias) == 2 * layers  # attention output, FFN output
    assert not [n for n in graph.node if n.op_type == "Add" and "bias" in n.name]
    assert assert_batch_invariant(tmp_path / "b" / "int8", min_cos=0.999999) >= 0.999999
    derived = read_manifest(tmp_path / "b" / "int8").quantization["derived"]["model.u8.onnx"]
    # /2 or later (here /3: the weights are in model.onnx.data): a bowrt that cannot flip QAttention's
    # weights asks for an upgrade instead of deriving a wrong twin
    assert derived["transform"] == "u8-weights/3"


def test_int8_profiles_are_validated_and_set_the_search_target(tmp_path):
    from bowrt.errors import Int8SettingsError
    from bowrt.export import parity
    from bowrt.export.int8.search import search_target

    assert int8.Int8Settings(profile="speed").static_tolerance == float("inf")
    assert int8.Int8Settings().static_tolerance == int8.STATIC_TOLERANCE
    assert int8.Int8Settings(profile="speed", static_tolerance=2.0).static_tolerance == 2.0
    with pytest.raises(Int8SettingsError, match="unknown int8 profile 'fast'"):
        int8.Int8Settings(profile="fast")
    with pytest.raises(Int8SettingsError, match="does not apply to method 'dynamic'"):
        int8.Int8Settings(profile="speed", method="dynamic")
    assert search_target({}, "speed") == parity.INT8_SPEED_TARGET != search_target({})
    assert search_target({"overlap_at_10": 0.0}, "speed") == {"min_cosine": parity.INT8_SPEED_TARGET["min_cosine"]}
    assert search_target({"min_cosine": 0.999}, "speed")["min_cosine"] == 0.999  # a stricter gate raises it


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "2"])
def test_static_tolerance_is_validated(bad, tmp_path):
    with pytest.raises(OptionError, match="static tolerance"):
        export_model("no/such-model", tmp_path / "b", ("int8",), int8_static_tolerance=bad, log=lambda _m: None)


def _correlated_inputs(rows: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(k, k)) / np.sqrt(k)
    scales = np.exp(rng.normal(size=k))  # uneven channels, as after a LayerNorm
    return (rng.normal(size=(rows, k)) @ mix) * scales


def test_gptq_rounding_beats_round_to_nearest_on_the_output():
    """GPTQ minimizes the error of X @ W, so on held-out rows from the same distribution
    it must beat rounding each weight to nearest, with the same int8 grid."""
    rng = np.random.default_rng(1)
    k, n = 96, 40
    x = _correlated_inputs(2500, k)
    x_cal, x_new = x[:2000], x[2000:]
    w = rng.normal(size=(k, n)).astype(np.float32)
    q_rtn, s_rtn = int8.round_weights(w)
    q_gptq, s_gptq = int8.gptq_weights(w, x_cal.T @ x_cal)
    assert q_gptq.dtype == np.int8 and q_gptq.shape == w.shape
    np.testing.assert_array_equal(s_gptq, s_rtn)
    assert np.abs(q_gptq.astype(int)).max() <= 127

    def err(q, s):
        return np.linalg.norm(x_new @ (q * s) - x_new @ w) / np.linalg.norm(x_new @ w)

    assert err(q_gptq, s_gptq) < 0.8 * err(q_rtn, s_rtn)


def test_gptq_handles_channels_never_seen_in_calibration():
    x = _correlated_inputs(300, 32)
    x[:, [3, 17]] = 0.0  # dead channels: X^T X has zero rows there
    w = np.random.default_rng(3).normal(size=(32, 8)).astype(np.float32)
    q, _ = int8.gptq_weights(w, x.T @ x)
    assert np.all(q[[3, 17]] == 0) and np.isfinite(q.astype(float)).all()


def test_standard_dynamic_int8_is_not_batch_invariant(minilm_dir, tmp_path):
    """The baseline this method replaces really has the defect (else the test above proves nothing)."""
    export_model(str(minilm_dir), tmp_path / "b", ("int8",), int8_method="dynamic", force=True,
                 gates=["int8.min_cosine=0", "int8.overlap_at_10=0"], log=lambda _m: None)
    with pytest.raises(AssertionError, match="alone vs batched"):
        assert_batch_invariant(tmp_path / "b" / "int8")


def _run_block(b: GraphBuilder, k: int, x: np.ndarray) -> np.ndarray:
    """Run a block as the runtime would here: the graph itself where ONNX Runtime's u8 x s8
    kernel is exact, else (AVX2, AVX-512 without VNNI: int16 pairs saturate) its u8 twin."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from bowrt.runtime import host, twin

    graph = helper.make_graph(
        b.nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, k]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int8.QUANTIZE_OPSET),
                                                    helper.make_opsetid("com.microsoft", 1)])
    graph_bytes = model.SerializeToString()
    graph_bytes = graph_bytes if host.int8_kernel_exact() else twin.derive_u8(graph_bytes)
    sess = ort.InferenceSession(graph_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x, "ids": np.zeros(x.shape[:2], np.int64)})[0]


@pytest.mark.parametrize("unsigned", [False, True])
def test_per_token_matmul_on_its_own_graph(unsigned):
    """The int8 MatMul block alone (3-D rows): matches x @ dequantized W within
    8-bit activation error, and an all-zero row comes out exactly zero, not NaN."""
    k, n = 16, 8
    w = np.random.default_rng(0).normal(size=(k, n)).astype(np.float32)
    w_q, w_scale = int8.round_weights(w)
    b = GraphBuilder("ids")
    b.per_token_matmul("p", "x", w_q, w_scale, unsigned=unsigned, out="y")
    x = np.random.default_rng(1).normal(size=(2, 3, k)).astype(np.float32)
    x = np.abs(x) if unsigned else x
    x[1, 1] = 0.0
    y = _run_block(b, k, x)
    assert y.shape == (2, 3, n) and np.isfinite(y).all()
    assert np.all(y[1, 1] == 0.0)
    ref = x @ (w_q.astype(np.float32) * w_scale)
    assert np.abs(y - ref).max() <= 0.01 * np.abs(ref).max()


def test_static_matmul_on_its_own_graph():
    """The calibrated-scale block: x / s quantized with one scale a (saturating beyond the
    calibrated range, never wrapping), times the smoothed int8 weights; matches the same
    arithmetic in numpy, and a row's output does not depend on the rows beside it."""
    k, n = 16, 8
    rng = np.random.default_rng(0)
    w = rng.normal(size=(k, n)).astype(np.float32)
    s = rng.uniform(0.5, 2.0, k).astype(np.float32)
    w_q, w_scale = int8.round_weights(w * s[:, None])
    a = 0.02
    b = GraphBuilder("ids")
    b.static_matmul("p", "x", w_q, w_scale, smooth=s, a=a, out="y")
    x = rng.normal(size=(2, 3, k)).astype(np.float32)
    x[0, 2, 5] = 50.0  # far beyond 127 * a * s_5: saturates at the top of the range
    y = _run_block(b, k, x)
    q = np.clip(np.round(x / s / a), -128, 127)
    ref = (q * a) @ (w_q.astype(np.float32) * w_scale)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    alone = _run_block(b, k, x[1:2, 1:2])
    np.testing.assert_array_equal(alone[0, 0], y[1, 1])
    bias = rng.normal(size=n).astype(np.float32)  # with one A scale the epilogue adds the bias exactly
    b = GraphBuilder("ids")
    b.static_matmul("p", "x", w_q, w_scale, smooth=s, a=a, out="y", bias=bias)
    np.testing.assert_allclose(_run_block(b, k, x), ref + bias, rtol=1e-4, atol=1e-4)


def test_best_step_ships_the_first_step_meeting_the_target_else_the_most_faithful():
    target = {"min_cosine": 0.995, "overlap_at_10": 0.98}
    row = lambda cos, ov, mean=0.999: {"min_cosine": cos, "overlap_at_10": ov, "mean_cosine": mean}
    # The search stops at the first step that meets the target: that one ships.
    assert best_step([row(0.99, 0.95), row(0.996, 0.97), row(0.996, 0.981)], target) == 2
    # Missed: not the last step but the one meeting most metrics, then the best mean cosine
    # (overlap@10 on the calibration texts is too noisy to rank by).
    assert best_step([row(0.996, 0.972, 0.9996), row(0.996, 0.978, 0.9995), row(0.996, 0.959, 0.9997)], target) == 2
    assert best_step([row(0.990, 0.979, 0.9999), row(0.996, 0.960, 0.9990), row(0.994, 0.975)], target) == 1
    # Then min cosine; ties go to the earliest step (fewest nodes moved out of int8).
    assert best_step([row(0.996, 0.95), row(0.997, 0.95)], target) == 1
    assert best_step([row(0.99, 0.95), row(0.99, 0.95)], target) == 0
    assert best_step([row(0.99, 0.95)], {}) == 0
