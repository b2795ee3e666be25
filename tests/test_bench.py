"""The benchmark suite itself (fast; the tiny model): FLOP counts, texts, the report, a micro run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import machine, main, report, systems, workloads
from bowrt.runtime import Encoder

RESULT_KEYS = {"schema", "meta", "machine", "versions", "ceilings", "systems", "workloads", "overhead", "accuracy"}


@pytest.fixture()
def bench_env(monkeypatch, tmp_path):
    """A private cache, and the env the runner would set, restored after the test."""
    monkeypatch.setenv("BOWRT_BENCH_CACHE", str(tmp_path / "cache"))
    for var, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        monkeypatch.setenv(var, value)
    return tmp_path


def test_flops_of_a_known_config():
    cfg = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    # per layer: linear weights 4*64^2 + 2*64*128 = 32768 -> 2*32768*10 = 655360; attention 4*10^2*64 = 25600
    assert machine.encoder_flops(cfg, [10]) == 2 * (655_360 + 25_600)
    assert machine.encoder_flops(cfg, [10, 10]) == 2 * machine.encoder_flops(cfg, [10])
    bert_base = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
    # ~2 x 85M linear weights per token, the textbook figure for BERT-base
    assert machine.encoder_flops(bert_base, [1]) == pytest.approx(2 * 84.9e6, rel=0.01)


def test_texts_have_exact_token_counts(tiny_bundles):
    texts = workloads.make_texts(tiny_bundles["fp32"] / "tokenizer.json", queries=20, corpus=40, seed=7)
    enc = Encoder(tiny_bundles["fp32"], providers="cpu")
    assert [len(r) for r in enc.tokenize_queries(texts.queries).ids] == texts.query_tokens
    assert [len(r) for r in enc.tokenize_passages(texts.batch).ids] == [128] * 32
    got = [len(r) for r in enc.tokenize_passages(texts.corpus).ids]
    assert got == texts.corpus_tokens and 20 <= min(got) and max(got) <= 256
    again = workloads.make_texts(tiny_bundles["fp32"] / "tokenizer.json", queries=20, corpus=40, seed=7)
    assert again.corpus == texts.corpus  # seeded: the same texts on every machine


def _fake_result() -> dict:
    s = report.summarize
    lat = {n: {"p50_ms": s([v, v * 1.1]), "p99_ms": s([3 * v]), "samples_ms": [v, 2 * v, 3 * v], "ceiling_fraction": 0.01}
           for n, v in (("torch", 10.0), ("bowrt-fp32", 4.0))}
    thr = {n: {"items_per_s": s([v, v * 0.9]), "tokens_per_s": s([128 * v]), "seconds": s([32 / v]), "ceiling_fraction": 0.3}
           for n, v in (("torch", 50.0), ("bowrt-fp32", 80.0))}
    conc = {"bowrt-fp32": {m: {str(c): {"rps": s([100.0 * c]), "p50_ms": s([1.0]), "p99_ms": s([2.0]),
                                         "mean_batch_size": float(c)} for c in (1, 4)} for m in ("batched", "direct")}}
    return {
        "schema": "bowrt-bench/1",
        "meta": {"quick": True, "rounds": 2, "threads": 2, "duration_s": 1.0, "notes": ["a note"],
                 "model": {"folder": "/m", "layers": 2, "hidden": 64, "pooling": "cls", "normalize": False}},
        "machine": {"processor": "cpu", "physical_cores": 2, "logical_cpus": 2, "memory_gb": 8, "cpu_flags": {"avx2": True}},
        "versions": {"bowrt": "0.1.0"},
        "ceilings": {"shape_mkn": [8, 8, 8], "threads": 2, "fp32": {"numpy": 10.0}, "bf16": {}, "int8": {"onnxruntime": 30.0}},
        "systems": {"torch": {"status": "ok", "precision": "fp32", "batching": "b", "sorts_by_length": False, "model_bytes": 2**20,
                              "memory": {"cold_start_s": 3.0, "peak_rss_mb": 500.0}},
                    "bowrt-fp32": {"status": "ok", "precision": "fp32", "batching": "b", "sorts_by_length": True, "model_bytes": 2**20},
                    "optimum": {"status": "unavailable", "reason": "not installed"}},
        "workloads": {"latency": {"description": "d", "results": lat}, "batch32x128": {"description": "d", "results": thr},
                      "corpus": {"description": "d", "results": thr},
                      "concurrent": {"description": "d", "clients": [1, 4], "results": conc}},
        "overhead": {"bowrt-fp32": {"e2e_ms": 4.0, "inference_ms": 3.9, "tokenize_ms": 0.05, "batch_ms": 0.01, "post_ms": 0.01,
                                    "outside_ms": 0.0, "overhead_fraction": 0.0175, "within_target": True}},
        "accuracy": {"description": "d", "results": {
            "bowrt-fp32": {"status": "ok", "min_cosine": 1.0, "mean_cosine": 1.0, "overlap_at_10": 1.0,
                           "batch_invariance_min_cosine": 1.0},
            "optimum": {"status": "unavailable", "reason": "not installed"}}},
    }


def test_report_writes_json_markdown_and_pngs(tmp_path):
    paths = report.write_report(_fake_result(), tmp_path)
    assert json.loads(paths["json"].read_text())["schema"] == "bowrt-bench/1"
    md = paths["md"].read_text()
    for heading in ("## Systems", "Batch-1 query latency", "Corpus of mixed lengths", "Concurrent clients",
                    "Runtime overhead", "Accuracy next to speed", "GEMM ceilings"):
        assert heading in md
    assert "**not available**: not installed" in md
    assert "| bowrt-fp32 | 4.2 [4–4.4]" in md  # median [min–max] over rounds
    for name in ("throughput", "latency", "concurrent"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speed_ratios_vs_torch_and_best_peer():
    rows = {"torch": {"m": {"median": 10.0}}, "st": {"m": {"median": 20.0}}, "bowrt-fp32": {"m": {"median": 40.0}}}
    r = report.ratios(rows, "m", higher=True)
    assert r["bowrt-fp32"] == (4.0, 2.0) and r["torch"] == (1.0, 0.5)
    r = report.ratios(rows, "m", higher=False)  # latency: lower is better
    assert r["bowrt-fp32"] == (0.25, 0.25) and r["st"] == (0.5, 0.5)


def test_unknown_peer_is_rejected_with_the_valid_list():
    with pytest.raises(ValueError, match="valid: torch"):
        systems.expand_against(["torch", "onnx-magic"])
    assert systems.expand_against(["st-onnx"]) == ["st-onnx", "st-onnx-O3", "st-onnx-int8"]


def test_a_system_that_fails_to_load_becomes_unavailable(tmp_path):
    with pytest.raises(systems.Unavailable, match="failed to load"):
        systems.load(systems.SystemSpec("bowrt-fp32", bundle=str(tmp_path / "missing")))


def test_concurrent_clients_batched_and_direct(tiny_bundles):
    enc = Encoder(tiny_bundles["fp32"], providers="cpu")
    queries = ["who wrote hamlet?", "capital of france", "q"]
    for mode in ("batched", "direct"):
        r = workloads.concurrent(enc, queries, clients=4, duration_s=0.2, mode=mode)
        assert r.requests > 0 and r.rps > 0 and len(r.latencies_ms) == r.requests
    assert r.mean_batch_size is None


def test_coldstart_child_of_a_bundle_imports_no_torch(tiny_bundles, tmp_path):
    spec = systems.SystemSpec("bowrt-fp32", bundle=str(tiny_bundles["fp32"]), threads=1)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"batch32x128": ["some passage text"] * 4}))
    p = subprocess.run([sys.executable, "-m", "benchmarks.coldstart", spec.to_json(), str(texts)],
                       capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["torch_imported"] is False
    assert got["t_first_vector"] >= got["t_loaded"] >= got["t_main"]
    assert 0 < got["rss_after_load_mb"] <= got["peak_rss_mb"] < 2000  # the child's own peak, not the parent's


def test_micro_run_torch_vs_bowrt_with_an_unavailable_peer(tiny_bundles, tiny_model_dir, bench_env, monkeypatch):
    def no_optimum() -> None:
        raise systems.Unavailable("optimum is missing (test)")

    monkeypatch.setattr(systems, "_require_optimum", no_optimum)
    out = bench_env / "results"
    rc = main([str(tiny_bundles["fp32"]), "--model", str(tiny_model_dir), "--against", "torch,optimum", "--quick",
               "--rounds", "1", "--threads", "1", "--workloads", "latency,batch32x128,corpus",
               "--no-accuracy", "--no-memory", "-o", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= set(res)
    assert res["systems"]["optimum"] == {"status": "unavailable", "reason": "optimum is missing (test)"}
    assert res["systems"]["torch"]["status"] == res["systems"]["bowrt-fp32"]["status"] == "ok"
    for wl in ("latency", "batch32x128", "corpus"):
        assert set(res["workloads"][wl]["results"]) == {"torch", "bowrt-fp32"}
    assert res["workloads"]["corpus"]["results"]["bowrt-fp32"]["items_per_s"]["median"] > 0
    lat = res["workloads"]["latency"]["results"]["bowrt-fp32"]
    assert lat["p50_ms"]["n"] == 1 and len(lat["samples_ms"]) == res["workloads"]["latency"]["calls"]
    ov = res["overhead"]["bowrt-fp32"]
    assert 0 < ov["overhead_fraction"] < 1 and ov["calls"] == res["workloads"]["latency"]["calls"]
    assert res["ceilings"]["best"]["fp32"] > 0
    assert "optimum is missing (test)" in (out / "results.md").read_text()
    assert (out / "throughput.png").is_file() and (out / "latency.png").is_file()


def test_st_int8_config_follows_the_host_isa():
    """ST's docs: one quantization config per ISA; u8 weights (u8 x u8, exact) only for avx2."""
    from benchmarks import st_int8

    assert st_int8.CONFIG_FOR_ISA["avx2"] == "avx2" and st_int8.int8_file("avx2") == "model_quint8_avx2.onnx"
    assert st_int8.CONFIG_FOR_ISA["amx"] == st_int8.CONFIG_FOR_ISA["avx512_vnni"] == "avx512_vnni"
    assert st_int8.CONFIG_FOR_ISA["arm64"] == "arm64" and st_int8.int8_file("arm64") == "model_qint8_arm64.onnx"
    from bowrt.bundle import INT8_ISAS

    assert set(INT8_ISAS) | {"unknown"} == set(st_int8.CONFIG_FOR_ISA)


def test_ort_qint8_quantizes_like_sentence_transformers_and_keeps_order(tiny_model_dir, tmp_path):
    """The optimum-free stand-in for st-onnx-int8: every MatMul int8 (the attention's too), ST's batching."""
    import onnx
    from tests.reference import torch_reference

    from benchmarks import st_int8

    spec = systems.prepare(systems.SystemSpec("ort-qint8", model_dir=str(tiny_model_dir), threads=1), tmp_path)
    config = st_int8.host_config()  # the config a sentence-transformers user picks for this host
    assert spec.files["config"] == config and spec.files["onnx_file"] == f"onnx/{st_int8.int8_file(config)}"
    graph = onnx.load(str(tmp_path / spec.files["folder"] / spec.files["onnx_file"]))
    weight_type = onnx.TensorProto.UINT8 if config == "avx2" else onnx.TensorProto.INT8
    inits = {i.name: i for i in graph.graph.initializer}
    weights = [inits[n.input[1]] for n in graph.graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
    assert weights and {w.data_type for w in weights} == {weight_type}
    ops = [n.op_type for n in graph.graph.node]
    assert "MatMul" not in ops
    assert ops.count("MatMulInteger") == 2 * 8  # 2 layers x (Q, K, V, out, FFN up/down, QK^T, PV)
    sys_ = systems.load(spec)
    assert systems.PRECISION[spec.name] == "int8" and sys_.sorts_by_length

    class Recorder:  # the batches the session sees, as rows of non-padding token counts
        def __init__(self, session):
            self.session, self.batches = session, []

        def run(self, names, feeds):
            self.batches.append(feeds["attention_mask"].sum(1).tolist())
            return self.session.run(names, feeds)

    sys_.session = rec = Recorder(sys_.session)
    rng = np.random.default_rng(0)
    words = ["river", "hamlet", "capital", "france", "play", "wrote", "egypt", "nile"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.permutation(np.arange(1, 41))]  # 40 lengths
    got = sys_.encode(texts, "passage")
    assert [len(b) for b in rec.batches] == [32, 8]  # batches of 32, longest texts first
    assert min(rec.batches[0]) >= max(rec.batches[1])
    ref = torch_reference(tiny_model_dir, texts, 256, pooling="cls")
    # Random weights give every text nearly the same vector; centred, each row is its own text's.
    g, r = got - ref.mean(0), ref - ref.mean(0)
    cos = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    assert (cos.argmax(1) == np.arange(len(texts))).all()  # the caller's order is restored
    assert cos.diagonal().min() > 0.95, cos.diagonal()
    assert sys_.encode([], "passage").shape[0] == 0
