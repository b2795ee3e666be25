"""Export stage: graph shape and fusions, manifest, parity gates, verification, refusals."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bowrt.bundle import FORMAT_VERSION, MANIFEST, read_manifest, verify_bundle, write_bundle
from bowrt.errors import (
    BundleChecksumError,
    BundleError,
    BundleFormatError,
    BundleMissingFileError,
    ExportError,
    ExportOptionError,
    ExportOutputExistsError,
    GateSpecError,
    Int8SettingsError,
    ModelNotFoundError,
    OptionError,
    ParityGateError,
    UnsupportedModelError,
)
from bowrt.export import export_model
from bowrt.export.probes import load_text_set
from tests.models import RANDOM_WEIGHT_GATES
from tests.reference import torch_reference
from tests.tolerances import FP16_MIN_COS, assert_fp32_parity

TEXTS = [
    "who wrote the opera carmen?",
    "Carmen is an opera in four acts by the French composer Georges Bizet.",
    "",
    "Dvořák 🎻 — ünïcödé, עברית, 中文",
    "word " * 400,
]


def ort_vectors(bundle: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Run a bundle's graph directly with the bundle's tokenizer (no bowrt runtime)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tok.enable_truncation(max_length)
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for text in texts:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        out.append(sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0])
    return np.concatenate(out)


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- graph and manifest ----------------------------------------------------------
def test_graph_io_and_fused_operators(tiny_bundles):
    model = onnx.load(str(tiny_bundles["fp32"] / "model.onnx"))
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for i in inputs.values():
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"]
    (out,) = model.graph.output
    assert out.name == "embedding"
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 64]
    ops = {n.op_type for n in model.graph.node}
    assert {"Attention", "LayerNormalization", "EmbedLayerNormalization", "BiasGelu"} <= ops
    # The CPU variants ship the layer norms split (ORT's CPU SkipLayerNormalization is slower);
    # the manifest still records what the fusion found, and the fp16 (GPU) graph keeps it fused.
    assert "SkipLayerNormalization" not in ops
    m = verify_bundle(tiny_bundles["fp32"])
    assert m.parity["fused_operators"]["SkipLayerNormalization"] == 2 * 2
    assert m.parity["graph_rewrites"] and "LayerNormalization" in m.parity["graph_rewrites"][0]
    int8_ops = {n.op_type for n in onnx.load(str(tiny_bundles["int8"] / "model.onnx")).graph.node}
    assert "SkipLayerNormalization" not in int8_ops and "LayerNormalization" in int8_ops
    if "fp16" in tiny_bundles:
        fp16_ops = {n.op_type for n in onnx.load(str(tiny_bundles["fp16"] / "model.onnx")).graph.node}
        assert "SkipLayerNormalization" in fp16_ops


def test_split_layer_norm_matches_the_fused_kernel(tmp_path):
    """The split graph computes what ORT's SkipLayerNormalization computes (with and without bias)."""
    from onnx import TensorProto, helper, numpy_helper

    from bowrt.export.optimize import split_skip_layer_norms

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), n) for n in ("g", "b", "bias")]
    nodes = [
        helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["h"], domain="com.microsoft", epsilon=1e-5),
        helper.make_node("SkipLayerNormalization", ["h", "s", "g", "b"], ["y"], domain="com.microsoft", epsilon=1e-5),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 8]) for n in ("x", "s")]
    graph = helper.make_graph(nodes, "g", io, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "fused.onnx"))
    assert split_skip_layer_norms(tmp_path / "fused.onnx", tmp_path / "split.onnx") == 2
    split = onnx.load(str(tmp_path / "split.onnx"))
    assert [n.op_type for n in split.graph.node] == ["Add", "Add", "LayerNormalization", "Add", "LayerNormalization"]
    feed = {"x": rng.standard_normal((2, 3, 8)).astype(np.float32), "s": rng.standard_normal((2, 3, 8)).astype(np.float32)}
    want = ort.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = ort.InferenceSession(
        str(tmp_path / "split.onnx"), providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
    ).run(None, feed)[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def _tail_graph(tmp_path: Path, tail_op: str) -> Path:
    """x -> MultiHeadAttention (mixes rows) -> MatMul -> Add(residual x) -> LayerNormalization
    -> ``tail_op`` -> Gather(row 0): the shape of a CLS encoder's last layer."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "g"),
             numpy_helper.from_array(np.array(0, np.int64), "row"),
             numpy_helper.from_array(np.array([-1], np.int64), "last")]
    nodes = [
        helper.make_node("MultiHeadAttention", ["x", "x", "x"], ["a"], domain="com.microsoft", num_heads=2),
        helper.make_node("MatMul", ["a", "w"], ["m"]),
        helper.make_node("Add", ["m", "x"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "g"], ["n"], axis=-1),
        {"Relu": helper.make_node("Relu", ["n"], ["t"]),
         "ReduceMean": helper.make_node("ReduceMean", ["n", "last"], ["t"], keepdims=1),
         "DynamicQuantizeMatMul": helper.make_node("DynamicQuantizeMatMul", ["n", "wq", "ws"], ["t"], domain="com.microsoft")}[tail_op],
        helper.make_node("Gather", ["t", "row"], ["y"], axis=1),
    ]
    if tail_op == "DynamicQuantizeMatMul":
        inits += [numpy_helper.from_array(rng.integers(-127, 128, (8, 8)).astype(np.int8), "wq"),
                  numpy_helper.from_array(np.float32(0.01), "ws")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "g.onnx"))
    return tmp_path / "g.onnx"


def test_cls_tail_runs_the_last_layer_on_the_cls_row_only(tmp_path):
    """After the last attention, the row-wise operators run on row 0 only (the residual is
    sliced too), and the output is what the whole-sequence graph gives, to the bit."""
    from bowrt.export.optimize import cls_tail

    src = _tail_graph(tmp_path, "Relu")
    assert cls_tail(src, tmp_path / "cls.onnx") == 4  # MatMul, Add, LayerNormalization, Relu
    ops = [n.op_type for n in onnx.load(str(tmp_path / "cls.onnx")).graph.node]
    assert ops.count("Gather") == 3  # the input of the tail twice (attention output, residual) + the output
    x = np.random.default_rng(1).standard_normal((3, 5, 8)).astype(np.float32)
    want, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                 for p in (src, tmp_path / "cls.onnx"))
    assert got.shape == want.shape == (3, 8)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("tail_op", ["ReduceMean", "DynamicQuantizeMatMul"])
def test_cls_tail_leaves_graphs_it_cannot_prove_row_wise(tmp_path, tail_op):
    """An operator that is not known to be row-wise in the tail (a reduction over more than
    the hidden axis, per-tensor dynamic quantization) leaves the graph as it was."""
    from bowrt.export.optimize import cls_tail

    src = _tail_graph(tmp_path, tail_op)
    assert cls_tail(src, tmp_path / "cls.onnx") == 0
    assert onnx.load(str(tmp_path / "cls.onnx")).graph == onnx.load(str(src)).graph


def test_cls_bundles_record_the_tail_rewrite(tiny_bundles):
    for variant in ("fp32", "int8"):
        m = verify_bundle(tiny_bundles[variant])
        assert m.pooling == "cls" and any("CLS row only" in r for r in m.parity["graph_rewrites"]), variant
        names = [n.name for n in onnx.load(str(tiny_bundles[variant] / "model.onnx")).graph.node]
        assert any(n.startswith("cls_tail/") for n in names), variant


def test_manifest_records_the_evaluation_setup(tiny_bundles):
    for variant, folder in tiny_bundles.items():
        m = verify_bundle(folder)
        raw = json.loads((folder / MANIFEST).read_text())
        assert raw["format_version"] == FORMAT_VERSION
        assert m.variant == variant
        assert (m.hidden_size, m.num_layers, m.num_heads, m.pooling) == (64, 2, 4, "cls")
        assert (m.text.query_max_length, m.text.passage_max_length) == (32, 256)
        assert m.text.format_passage("Title", "text") == "Title text"
        assert m.text.format_passage("", "text") == "text"
        assert m.text.token_type_ids == "zeros" and m.normalize is False and m.similarity == "dot"
        # One graph per bundle: int8's u8 x u8 twin (exact on non-VNNI CPUs) is derived at load;
        # int8 keeps its weights in a data file beside the graph.
        data = {"model.onnx.data"} if variant == "int8" else set()
        assert set(m.files) == {"model.onnx", "tokenizer.json", "numerics.npz"} | data
        assert all(len(e["sha256"]) == 64 for e in m.files.values())
        assert {"torch", "transformers", "onnxruntime", "onnx", "bowrt"} <= set(m.tools)
        metrics = m.parity["metrics"]
        assert {"min_cosine", "mean_cosine", "max_abs_diff", "overlap_at_10", "batch_invariance_min_cosine"} <= set(metrics)
        assert m.parity["probe_set"]["queries"] + m.parity["probe_set"]["passages"] >= 64
    assert read_manifest(tiny_bundles["int8"]).quantization["method"] == "smoothquant"


def test_probe_set_is_varied():
    probes = load_text_set("probes")
    calibration = load_text_set("calibration")
    assert len(probes.queries) + len(probes.passages) >= 64
    lengths = [len(t.split()) for _, t in probes.passages]
    assert min(lengths) < 20 and max(lengths) > 250
    assert any(not title for title, _ in probes.passages) and any(title for title, _ in probes.passages)
    assert not set(probes.queries) & set(calibration.queries)
    assert not {t for _, t in probes.passages} & {t for _, t in calibration.passages}


# --- parity, independent of the export code ------------------------------------
@pytest.mark.parametrize("model", ["tiny", "minilm"])
def test_fp32_parity_against_pytorch(model, tiny_model_dir, tiny_bundles, minilm_dir, minilm_bundles):
    folder, bundles = (tiny_model_dir, tiny_bundles) if model == "tiny" else (minilm_dir, minilm_bundles)
    pooling = read_manifest(bundles["fp32"]).pooling
    ref = torch_reference(folder, TEXTS, 256, pooling)
    assert_fp32_parity(ort_vectors(bundles["fp32"], TEXTS, 256), ref)


def test_fp16_parity_on_real_weights(minilm_dir, minilm_bundles):
    probes = load_text_set("probes")
    texts = list(probes.queries[:16]) + [f"{t} {x}" if t else x for t, x in probes.passages[:16]]
    ref = torch_reference(minilm_dir, texts, 256, "mean")
    got = ort_vectors(minilm_bundles["fp16"], texts, 256)
    assert cos(ref, got).min() >= FP16_MIN_COS
    graph = onnx.load(str(minilm_bundles["fp16"] / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)


def test_int8_records_its_calibration_and_shrinks(minilm_bundles):
    # (Its parity figures meet the gates by construction: the export refuses otherwise.
    # tests/test_int8.py checks that they are what the bundle really does.)
    m = read_manifest(minilm_bundles["int8"])
    assert m.quantization["calibration"]["sha256"] == load_text_set("calibration").sha256
    assert m.quantization["fp32_nodes"] == sorted(m.quantization["fp32_nodes"])
    assert (minilm_bundles["int8"] / "model.onnx").stat().st_size < 0.75 * (minilm_bundles["fp32"] / "model.onnx").stat().st_size


# --- verification --------------------------------------------------------------
@pytest.fixture
def bundle_copy(tiny_bundles, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundles["fp32"], dst)
    return dst


def test_verify_detects_tampering(bundle_copy):
    verify_bundle(bundle_copy)
    data = bytearray((bundle_copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleChecksumError, match="model.onnx"):
        verify_bundle(bundle_copy)


def test_verify_detects_missing_file_and_unknown_version(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleMissingFileError, match="tokenizer.json"):
        verify_bundle(bundle_copy)
    raw = json.loads((bundle_copy / MANIFEST).read_text())
    raw["format_version"] = 99
    (bundle_copy / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleFormatError, match="version 99"):
        verify_bundle(bundle_copy)
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleFormatError):
        verify_bundle(bundle_copy)
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(BundleMissingFileError):
        verify_bundle(bundle_copy)


def test_write_is_atomic(tiny_bundles, tmp_path, monkeypatch):
    import bowrt.bundle as bundle_mod

    m = read_manifest(tiny_bundles["fp32"])
    files = {name: tiny_bundles["fp32"] / name for name in m.files}

    def broken(_folder):
        raise BundleChecksumError("simulated failure while verifying")

    monkeypatch.setattr(bundle_mod, "verify_bundle", broken)
    with pytest.raises(BundleChecksumError):
        write_bundle(tmp_path / "out", m, files)
    assert list(tmp_path.iterdir()) == []  # no half-written bundle, no temp folder left
    monkeypatch.undo()
    write_bundle(tmp_path / "out", m, files)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(tmp_path / "out", m, files)
    write_bundle(tmp_path / "out", m, files, force=True)
    verify_bundle(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- refusals ------------------------------------------------------------------
def test_existing_output_refused_without_force(tiny_model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(BundleError, match="--force"):
        export_model(str(tiny_model_dir), tmp_path / "out", ("fp32",), log=lambda _m: None)


def test_unknown_variant_lists_valid_ones(tiny_model_dir, tmp_path):
    with pytest.raises(OptionError, match="fp32, fp16, int8"):
        export_model(str(tiny_model_dir), tmp_path / "out", ("fp8",), log=lambda _m: None)
    with pytest.raises(OptionError, match="smoothquant"):
        export_model(str(tiny_model_dir), tmp_path / "out", ("int8",), int8_method="magic", log=lambda _m: None)


def test_failed_gate_writes_nothing(tiny_model_dir, tmp_path):
    with pytest.raises(ParityGateError, match="fp32 failed"):
        export_model(str(tiny_model_dir), tmp_path / "out", ("fp32",), gates=["fp32.min_cosine=1.5"], log=lambda _m: None)
    assert not (tmp_path / "out").exists()


def test_bad_gate_spec(tiny_model_dir, tmp_path):
    with pytest.raises(OptionError, match="VARIANT.METRIC=VALUE"):
        export_model(str(tiny_model_dir), tmp_path / "out", ("fp32",), gates=["nonsense"], log=lambda _m: None)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"variants": ("fp8",)}, ExportOptionError, "fp32, fp16, int8"),
    ({"gates": ["int8.nonsense=1"]}, GateSpecError, "unknown metric"),
    ({"int8_method": "magic"}, Int8SettingsError, "smoothquant"),
    ({"int8_static_tolerance": -1.0}, Int8SettingsError, "static tolerance"),
])
def test_bad_export_options_are_typed_export_errors_before_the_model_loads(kwargs, error, match, tmp_path, capsys):
    """Each is an ExportError (and still an OptionError), raised before anything is loaded
    ("no/such-model" would fail to load), and the CLI prints it in one line."""
    args = {"variants": ("int8",), **kwargs}
    with pytest.raises(error, match=match) as raised:
        export_model("no/such-model", tmp_path / "out", args.pop("variants"), log=lambda _m: None, **args)
    assert isinstance(raised.value, ExportError) and isinstance(raised.value, OptionError)
    from bowrt.cli import main

    assert main(["export", "no/such-model", "-o", str(tmp_path / "out"), "--gate", "int8.nonsense=1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bowrt: error: gate 'int8.nonsense=1': unknown metric") and "Traceback" not in err


def test_existing_output_is_an_export_error(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportOutputExistsError, match="--force") as raised:
        export_model("no/such-model", tmp_path / "out", ("fp32",), log=lambda _m: None)
    assert isinstance(raised.value, ExportError) and isinstance(raised.value, BundleError)


def test_int8_graph_rewrite_refuses_bad_settings_with_typed_errors(tmp_path):
    from bowrt.export.int8 import quantize_smooth
    from bowrt.export.probes import load_text_set as texts

    with pytest.raises(Int8SettingsError, match="unknown rounding 'fast'; valid: gptq, nearest"):
        quantize_smooth(tmp_path / "fused.onnx", tmp_path / "int8.onnx", None, rounding="fast")
    with pytest.raises(ExportOptionError, match="probes, calibration"):
        texts("training")


def test_every_variant_has_a_build_step_and_the_export_runs_the_runtime_session_builder():
    from bowrt.bundle import VARIANTS
    from bowrt.export.pipeline import VARIANT_STEPS

    assert set(VARIANT_STEPS) == set(VARIANTS)
    # One session builder (runtime/session.py: ort_session) for everything the export measures.
    import bowrt.export

    export_dir = Path(bowrt.export.__file__).parent
    assert not [p for p in export_dir.rglob("*.py") if "InferenceSession(" in p.read_text(encoding="utf-8")]


def test_not_a_model_folder(tmp_path):
    with pytest.raises(UnsupportedModelError, match="config.json"):
        export_model(str(tmp_path), tmp_path / "out", ("fp32",), log=lambda _m: None)


def test_not_a_bert_encoder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2Model"]}))
    with pytest.raises(UnsupportedModelError, match="BERT"):
        export_model(str(tmp_path), tmp_path / "out", ("fp32",), log=lambda _m: None)


def test_hub_model_offline_says_how_to_pass_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="local"):
        export_model("bowdpr/bowdpr_wiki_triviaft", tmp_path / "out", ("fp32",), log=lambda _m: None)


def test_hub_model_offline_fails_fast_in_one_line_naming_hf_download(tmp_path, capsys):
    import time

    from bowrt.cli import main

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # as CI (and tests/conftest.py) sets it
    import transformers  # noqa: F401 - imported first: the time below is the failure's, not the imports'

    t0 = time.perf_counter()
    rc = main(["export", "bowdpr/bowdpr_wiki_triviaft", "-o", str(tmp_path / "out"), "--variants", "fp32"])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith("bowrt: error: "), err
    assert "HF_HUB_OFFLINE is set" in err and "`hf download bowdpr/bowdpr_wiki_triviaft --local-dir DIR`" in err
    assert "huggingface-cli" not in err and "Retrying" not in err
    assert seconds < 5, f"{seconds:.1f} s to fail offline"


def test_unreachable_hub_is_probed_once_then_only_the_cache_is_read(tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    from bowrt.export import source

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    assert "unreachable" in source._hub_unavailable()
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="127.0.0.1:9 is unreachable .* not in the local Hugging Face cache.*hf download"):
        source.load_source("bowdpr/bowdpr_wiki_triviaft")
    assert time.perf_counter() - t0 < source.HUB_PROBE_TIMEOUT_S + 2


def test_the_dropped_pooler_is_not_reported_but_missing_weights_are(tiny_model_dir, tmp_path, capfd):
    import logging

    import torch
    from transformers import BertConfig, BertModel

    from bowrt.cli import main
    from bowrt.export.source import _pooler_report_only

    # A checkpoint with pooler weights (what most BERT checkpoints have; bowrt loads without the pooler).
    folder = tmp_path / "ckpt"
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(tiny_model_dir), add_pooling_layer=True).save_pretrained(folder)
    for f in tiny_model_dir.iterdir():
        if "token" in f.name or f.name == "vocab.txt":
            shutil.copy(f, folder / f.name)
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addHandler(handler)
    try:
        assert main(["export", str(folder), "-o", str(tmp_path / "b"), "--variants", "fp32"]) == 0
    finally:
        logger.removeHandler(handler)
    out, err = capfd.readouterr()
    assert "pooler.dense" not in out + err and "LOAD REPORT" not in out + err and "UNEXPECTED" not in out + err
    assert not [r for r in seen if "pooler" in r.getMessage()]
    assert not logger.filters  # the filter was removed after loading

    def record(msg):
        return logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1, msg, None, None)

    assert _pooler_report_only(record("BertModel LOAD REPORT\npooler.dense.bias   | UNEXPECTED |\n"
                                      "pooler.dense.weight | UNEXPECTED |"))
    assert _pooler_report_only(record("Some weights of the model checkpoint at x were not used when initializing "
                                      "BertModel: ['pooler.dense.bias', 'pooler.dense.weight']"))
    # Anything else is a real problem and stays.
    assert not _pooler_report_only(record("BertModel LOAD REPORT\npooler.dense.bias | UNEXPECTED |\n"
                                          "encoder.layer.0.output.dense.weight | MISSING |"))
    assert not _pooler_report_only(record("BertModel LOAD REPORT\npooler.dense.bias | MISSING |"))
    assert not _pooler_report_only(record("something else entirely"))


def test_sentence_transformers_settings_are_read(minilm_bundles):
    m = read_manifest(minilm_bundles["fp32"])
    assert m.pooling == "mean" and m.normalize is True and m.hidden_size == 384 and m.num_layers == 6


@pytest.mark.slow
def test_bert_base_twin_fp32_parity_through_the_runtime(twin_model_dir, twin_bundles):
    from bowrt import Encoder

    m = read_manifest(twin_bundles["fp32"])
    assert (m.hidden_size, m.num_layers, m.num_heads) == (768, 12, 12)
    ref = torch_reference(twin_model_dir, TEXTS, 256, "cls")
    got = Encoder(twin_bundles["fp32"]).encode_passages(TEXTS)
    assert_fp32_parity(got, ref)


def test_export_prints_its_own_progress_only(tiny_model_dir, tmp_path, capfd):
    """No third-party progress bar or tracer warning reaches the user's terminal, and the
    caller's own progress-bar setting is restored afterwards."""
    import warnings

    from transformers.utils import logging as tf_logging

    lines = []
    tf_logging.enable_progress_bar()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model(str(tiny_model_dir), tmp_path / "out", ("fp32",), gates=RANDOM_WEIGHT_GATES, log=lines.append)
    out, err = capfd.readouterr()
    assert lines and any("fp32" in ln for ln in lines)  # bowrt's own progress, through log
    assert "Loading weights" not in err + out and "it/s" not in err
    assert not [w for w in caught if "aten::index" in str(w.message) or "TracerWarning" in type(w.message).__name__], \
        [str(w.message)[:80] for w in caught]
    assert tf_logging.is_progress_bar_enabled()
