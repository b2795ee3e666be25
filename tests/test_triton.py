"""bowrt.scale.triton: the model repository, parsed with Triton's own protobuf definitions."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from bowrt import Encoder
from bowrt.bundle import read_manifest, sha256_file
from bowrt.errors import BundleChecksumError, BundleError, OptionError
from bowrt.scale.triton import PASSAGE_BUCKET, export_triton, triton_inputs
from tests.tolerances import SAME_BUNDLE_ATOL

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (Triton's model_config protobuf) is not installed"
)
text_format = pytest.importorskip("google.protobuf.text_format")

TYPES = {"int64": model_config_pb2.TYPE_INT64, "float32": model_config_pb2.TYPE_FP32}


def _parse(model_dir):
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_cpu_repository_matches_the_manifest(tiny_bundles, tmp_path):
    bundle = tiny_bundles["fp32"]
    m = read_manifest(bundle)
    model_dir = export_triton(bundle, tmp_path / "repo", max_batch_size=32, instances=2)
    assert model_dir == tmp_path / "repo" / "bowrt_fp32"
    c = _parse(model_dir)
    assert (c.name, c.backend, c.max_batch_size) == ("bowrt_fp32", "onnxruntime", 32)
    assert [i.name for i in c.input] == m.input_names == ["input_ids", "attention_mask"]
    for tensor, spec in zip(c.input, m.inputs):
        assert tensor.data_type == TYPES[spec.dtype] == model_config_pb2.TYPE_INT64
        assert list(tensor.dims) == [-1]  # batch dim implied by max_batch_size; sequence variable
    (out,) = c.output
    assert out.name == m.output_name == "embedding"
    assert out.data_type == model_config_pb2.TYPE_FP32 and list(out.dims) == [m.hidden_size]
    assert list(c.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert c.dynamic_batching.max_queue_delay_microseconds == 2000
    (group,) = c.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == 2
    assert not c.optimization.execution_accelerators.gpu_execution_accelerator
    # The graph is the bundle's, byte for byte; the client files sit next to the config.
    assert sha256_file(model_dir / "1" / "model.onnx") == m.files["model.onnx"]["sha256"]
    assert (model_dir / "tokenizer.json").read_bytes() == (bundle / "tokenizer.json").read_bytes()
    assert read_manifest(model_dir) == m


def test_gpu_fp16_gets_tensorrt_fp16(tiny_bundles, tmp_path):
    model_dir = export_triton(tiny_bundles["fp16"], tmp_path / "repo", kind="gpu", max_batch_size=64)
    c = _parse(model_dir)
    (group,) = c.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1
    (acc,) = c.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt"
    assert acc.parameters["precision_mode"] == "FP16"
    assert acc.parameters["trt_profile_max_shapes"] == "input_ids:64x256,attention_mask:64x256"
    assert acc.parameters["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    # fp32 on GPU: TensorRT at FP32 (parity as exported); turned off on request.
    c32 = _parse(export_triton(tiny_bundles["fp32"], tmp_path / "repo", kind="gpu"))
    assert c32.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["precision_mode"] == "FP32"
    off = _parse(export_triton(tiny_bundles["fp32"], tmp_path / "repo", "plain", kind="gpu", tensorrt=False))
    assert not off.optimization.execution_accelerators.gpu_execution_accelerator


def test_client_inputs_run_the_repository_graph(tiny_bundles, tmp_path):
    bundle = tiny_bundles["fp32"]
    model_dir = export_triton(bundle, tmp_path / "repo")
    enc = Encoder(bundle, threads=1)
    # What Triton's onnxruntime backend runs: the copied graph on the client's padded tensors.
    sess = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    queries = ["who wrote hamlet?", "q"]
    feeds = triton_inputs(model_dir, queries, "query")
    assert list(feeds) == ["input_ids", "attention_mask"]
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape == (2, 32)
    np.testing.assert_allclose(sess.run(["embedding"], feeds)[0], enc.encode_queries(queries), atol=1e-5)
    passages = [("Hamlet", "Hamlet is a tragedy."), "word " * 100]
    feeds = triton_inputs(model_dir, passages, "passage")
    assert feeds["input_ids"].shape[1] % PASSAGE_BUCKET == 0 and feeds["input_ids"].shape[1] <= 256
    np.testing.assert_allclose(sess.run(["embedding"], feeds)[0], enc.encode_passages(passages), atol=1e-5)


def test_an_int8_graph_takes_its_data_file_into_the_repository(tiny_bundles, tmp_path):
    """An int8 graph that keeps its weights in model.onnx.data (bowrt >= 0.6), handed to Triton as
    it is (here: a copy whose manifest calls it exact everywhere, so no twin is chosen): the data file
    goes beside it, byte for byte, and the repository graph computes what the bundle graph computes."""
    import json
    import shutil

    from bowrt.bundle import DATA_FILE, INT8_ISAS, MANIFEST, MODEL_FILE

    bundle = shutil.copytree(tiny_bundles["int8"], tmp_path / "int8")
    data = json.loads((bundle / MANIFEST).read_text())
    data["quantization"]["graphs"] = {MODEL_FILE: list(INT8_ISAS)}
    data["quantization"]["derived"] = {}
    (bundle / MANIFEST).write_text(json.dumps(data))
    model_dir = export_triton(bundle, tmp_path / "repo")
    m = read_manifest(bundle)
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == [MODEL_FILE, DATA_FILE]
    assert sha256_file(model_dir / "1" / DATA_FILE) == m.files[DATA_FILE]["sha256"]
    feeds = triton_inputs(model_dir, ["who wrote hamlet?", "q"], "query")
    got = ort.InferenceSession(str(model_dir / "1" / MODEL_FILE), providers=["CPUExecutionProvider"]).run(None, feeds)
    want = ort.InferenceSession(str(bundle / MODEL_FILE), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_array_equal(got[0], want[0])


def test_refusals(tiny_bundles, tmp_path):
    bundle = tiny_bundles["fp32"]
    export_triton(bundle, tmp_path / "repo")
    with pytest.raises(BundleError, match="already exists"):
        export_triton(bundle, tmp_path / "repo")
    export_triton(bundle, tmp_path / "repo", force=True)
    with pytest.raises(OptionError, match="kind"):
        export_triton(bundle, tmp_path / "repo", "x", kind="tpu")
    with pytest.raises(OptionError, match="max_batch_size"):
        export_triton(bundle, tmp_path / "repo", "x", max_batch_size=0)
    with pytest.raises(OptionError, match="name"):
        export_triton(bundle, tmp_path / "repo", "bad name/..")
    with pytest.raises(OptionError, match="tensorrt"):
        export_triton(bundle, tmp_path / "repo", "x", tensorrt=True)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["bowrt_fp32"]  # nothing half-written


def test_tampered_bundle_is_refused(tiny_bundles, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundles["fp32"], copy)
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleChecksumError):
        export_triton(copy, tmp_path / "repo")


def test_graph_tail_refuses_what_it_cannot_edit(tiny_bundles):
    from bowrt.errors import BundleFormatError
    from bowrt.scale.onnx_tail import append_l2_normalize

    model = (tiny_bundles["fp32"] / "model.onnx").read_bytes()
    with pytest.raises(BundleFormatError, match="no node of the graph produces its output 'nothing'"):
        append_l2_normalize(model, "nothing")
    with pytest.raises(BundleFormatError, match="truncated"):
        append_l2_normalize(model[:-7], "embedding")
    # The edited graph: one more node, the same output name, unit rows.
    sess = ort.InferenceSession(append_l2_normalize(model, "embedding"), providers=["CPUExecutionProvider"])
    ids = np.array([[101, 2040, 2626, 102]], dtype=np.int64)
    (vec,) = sess.run(["embedding"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=SAME_BUNDLE_ATOL)
