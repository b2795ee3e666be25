"""The benchmark suite itself (fast; the tiny model): FLOP counts, texts, the report, a micro run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bowrt.errors import OptionError

from benchmarks.harness import machine, report, rounds, systems, usage, workloads
from benchmarks.harness.adapters import common
from benchmarks.harness.cli import main
from benchmarks.harness.config import BenchConfig
from benchmarks.harness.spec import SystemSpec, Unavailable
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
    assert "## Not run here" in md and "| optimum | not installed | - |" in md
    assert "| optimum |" not in md.split("## Not run here")[0]  # the Systems table lists what ran
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
    with pytest.raises(Unavailable, match="failed to load"):
        systems.load(SystemSpec("bowrt-fp32", bundle=str(tmp_path / "missing")))


def test_concurrent_clients_batched_and_direct(tiny_bundles):
    enc = Encoder(tiny_bundles["fp32"], providers="cpu")
    queries = ["who wrote hamlet?", "capital of france", "q"]
    for mode in ("batched", "direct"):
        r = workloads.concurrent(enc, queries, clients=4, duration_s=0.2, mode=mode)
        assert r.requests > 0 and r.rps > 0 and len(r.latencies_ms) == r.requests
    assert r.mean_batch_size is None


def test_coldstart_child_of_a_bundle_imports_no_torch(tiny_bundles, tmp_path):
    spec = SystemSpec("bowrt-fp32", bundle=str(tiny_bundles["fp32"]), threads=1)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"batch32x128": ["some passage text"] * 4}))
    p = subprocess.run([sys.executable, "-m", "benchmarks.harness.coldstart", spec.to_json(), str(texts)],
                       capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["torch_imported"] is False
    assert got["t_first_vector"] >= got["t_loaded"] >= got["t_main"]
    assert 0 < got["rss_after_load_mb"] <= got["peak_rss_mb"] < 2000  # the child's own peak, not the parent's


def test_micro_run_torch_vs_bowrt_with_an_unavailable_peer(tiny_bundles, tiny_model_dir, bench_env, monkeypatch):
    from dataclasses import replace

    from benchmarks.harness import adapters, peer_env

    def no_optimum() -> None:
        raise Unavailable("optimum is missing (test)")

    monkeypatch.setitem(adapters.PEERS, "optimum", replace(adapters.PEERS["optimum"], check=no_optimum))
    out = bench_env / "results"
    rc = main([str(tiny_bundles["fp32"]), "--model", str(tiny_model_dir), "--against", "torch,optimum", "--quick",
               "--rounds", "1", "--threads", "1", "--workloads", "latency,batch32x128,corpus",
               "--no-accuracy", "--no-memory", "-o", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= set(res)
    opt = res["systems"]["optimum"]
    assert opt["status"] == "unavailable" and opt["reason"].startswith("optimum is missing (test)")
    assert opt["fix"] == peer_env.BUILD_COMMAND  # where it would run, and how to get there
    assert res["systems"]["torch"]["status"] == res["systems"]["bowrt-fp32"]["status"] == "ok"
    for wl in ("latency", "batch32x128", "corpus"):
        assert set(res["workloads"][wl]["results"]) == {"torch", "bowrt-fp32"}
    assert res["workloads"]["corpus"]["results"]["bowrt-fp32"]["items_per_s"]["median"] > 0
    buckets = res["workloads"]["corpus"]["buckets"]  # on by default: the corpus by length, every passage once
    assert sum(b["passages"] for b in buckets.values()) == res["workloads"]["corpus"]["items"]
    assert all(b["results"]["bowrt-fp32"]["paired"]["n"] == 1 for b in buckets.values())
    assert res["workloads"]["latency"]["results"]["bowrt-fp32"]["paired_per_call"]["peers"] == ["torch"]
    lat = res["workloads"]["latency"]["results"]["bowrt-fp32"]
    assert lat["p50_ms"]["n"] == 1 and len(lat["samples_ms"]) == res["workloads"]["latency"]["calls"]
    ov = res["overhead"]["bowrt-fp32"]
    assert 0 < ov["overhead_fraction"] < 1 and ov["calls"] == res["workloads"]["latency"]["calls"]
    assert res["ceilings"]["best"]["fp32"] > 0
    assert "optimum is missing (test)" in (out / "results.md").read_text()
    assert (out / "throughput.png").is_file() and (out / "latency.png").is_file()


def test_st_int8_config_follows_the_host_isa():
    """ST's docs: one quantization config per ISA; u8 weights (u8 x u8, exact) only for avx2."""
    from benchmarks.harness.adapters import ort_qint8 as st_int8

    assert st_int8.CONFIG_FOR_ISA["avx2"] == "avx2" and st_int8.int8_file("avx2") == "model_quint8_avx2.onnx"
    assert st_int8.CONFIG_FOR_ISA["amx"] == st_int8.CONFIG_FOR_ISA["avx512_vnni"] == "avx512_vnni"
    assert st_int8.CONFIG_FOR_ISA["arm64"] == "arm64" and st_int8.int8_file("arm64") == "model_qint8_arm64.onnx"
    from bowrt.bundle import INT8_ISAS

    assert set(INT8_ISAS) | {"unknown"} == set(st_int8.CONFIG_FOR_ISA)


def test_ort_qint8_quantizes_like_sentence_transformers_and_keeps_order(tiny_model_dir, tmp_path):
    """The optimum-free stand-in for st-onnx-int8: every MatMul int8 (the attention's too), ST's batching."""
    import onnx

    from benchmarks.harness.adapters import ort_qint8 as st_int8
    from tests.reference import torch_reference

    spec = systems.prepare(SystemSpec("ort-qint8", model_dir=str(tiny_model_dir), threads=1), tmp_path)
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
    assert systems.precision(spec.name) == "int8" and sys_.sorts_by_length

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


# --- issue 19: the peer environment, its worker, and the new peers ------------------------------
def test_peer_env_installs_torch_first_pinned_then_the_optimum_stack(tmp_path):
    from benchmarks.harness import peer_env

    cmds = peer_env.build_commands(tmp_path / "venv", base_python="/usr/bin/python3")
    assert cmds[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "venv")]
    py = str(peer_env.python_of(tmp_path / "venv"))
    installs = [c for c in cmds if c[:4] == [py, "-m", "pip", "install"]]
    torch_step = next(i for i, c in enumerate(installs) if any(a.startswith("torch") for a in c))
    assert [a for a in installs[torch_step][4:] if not a.startswith("-")] == ["torch==2.13.0"]  # alone, exact pin
    rest = installs[torch_step + 1]
    assert "torch==2.13.0" in rest  # repeated, so no requirement can swap the CPU build for another
    assert "transformers<4.58" in rest and any(a.startswith("optimum-onnx[onnxruntime]") for a in rest)
    assert any(a.startswith("sentence-transformers") and a.endswith("<6") for a in rest)
    assert not any(a == "torch" for c in cmds for a in c)  # never a bare torch requirement
    assert peer_env.env_key() != peer_env.env_key(requirements=peer_env.REQUIREMENTS + ("x",))


def test_peer_env_is_ready_only_after_a_finished_build(tmp_path):
    from benchmarks.harness import peer_env

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    assert peer_env.ready_info(venv) is None  # nothing built
    (venv / peer_env.READY).write_text(json.dumps({"built": "now", "freeze": ["torch==2.13.0+cpu"]}))
    assert peer_env.ready_info(venv) is None  # ready.json, but its python is gone
    peer_env.python_of(venv).symlink_to(sys.executable)
    assert peer_env.ready_info(venv)["freeze"] == ["torch==2.13.0+cpu"]
    (venv / peer_env.READY).write_text("{half")
    assert peer_env.ready_info(venv) is None


def test_worker_round_trips_vectors_exactly(tiny_bundles):
    from benchmarks.harness.peer_client import WorkerSystem

    spec = SystemSpec("bowrt-fp32", bundle=str(tiny_bundles["fp32"]), threads=1)
    texts = ["who wrote hamlet?", "the nile flows north through egypt", "a"]
    here = systems.load(spec)
    w = WorkerSystem(spec, sys.executable)  # this venv's python as the worker interpreter
    try:
        assert w.batching == here.batching and w.model_bytes == here.model_bytes
        for kind in ("query", "passage"):
            got, want = w.encode(texts, kind), here.encode(texts, kind)
            assert got.dtype == want.dtype and np.array_equal(got, want)
        assert len(w.calls) == 2 and all(outer >= inner > 0 for outer, inner in w.calls)
        assert "python" in w.where
        many = [" ".join(["word"] * (k % 7 + 1)) for k in range(70)]
        assert w.batches(many, "passage") == here.batches(many, "passage")  # the adapter's groups, through the pipe
    finally:
        w.close()
    assert w.worker.proc.poll() is not None  # closed: the worker process has exited


def test_worker_errors_come_back_as_unavailable_or_worker_errors(tmp_path):
    from benchmarks.harness.peer_client import Worker, WorkerError, WorkerSystem

    with pytest.raises(Unavailable, match="in the peer worker: .*failed to load"):
        WorkerSystem(SystemSpec("bowrt-fp32", bundle=str(tmp_path / "missing")), sys.executable)
    w = Worker(sys.executable)
    try:
        with pytest.raises(WorkerError, match="encode before load"):
            w.call({"op": "encode", "texts": ["x"], "kind": "query"})
        with pytest.raises(WorkerError, match="unknown op 'magic'"):
            w.call({"op": "magic"})
        assert w.call({"op": "hello"})[0]["ok"]  # still serving after errors
    finally:
        w.close()
    dead = tmp_path / "dead-python"
    dead.write_text("#!/bin/sh\necho 'no such environment' >&2\nexit 3\n")
    dead.chmod(0o755)
    with pytest.raises(WorkerError, match=r"exited \(3\).*no such environment"):
        Worker(dead)


@pytest.fixture()
def fake_peer_env(bench_env):
    """A 'built' peer environment whose python is this one (so a test never builds the real venv)."""
    from benchmarks.harness import peer_env

    venv = peer_env.env_dir()
    (venv / "bin").mkdir(parents=True)
    peer_env.python_of(venv).symlink_to(sys.executable)
    (venv / peer_env.READY).write_text(json.dumps({"built": "test", "freeze": []}))
    return venv


def test_st_onnx_routes_to_the_peer_env_and_says_how_to_build_it(bench_env, fake_peer_env):
    if systems.local_reason("st-onnx") is None:
        pytest.skip("optimum runs in this environment: no worker needed")
    from benchmarks.harness import peer_env

    assert systems.runs_in_worker("st-onnx") and systems.unavailable("st-onnx") is None
    assert not systems.runs_in_worker("torch") and not systems.runs_in_worker("ct2-int8")
    # The fake env's python has no optimum either: the worker's own Unavailable comes back as one, fix included.
    with pytest.raises(Unavailable, match="in the peer worker: .*optimum") as e:
        systems.load(SystemSpec("optimum", model_dir="/nowhere"))
    assert e.value.fix == peer_env.BUILD_COMMAND
    (fake_peer_env / peer_env.READY).unlink()  # not built: the fix is to build it
    why = systems.unavailable("st-onnx")
    assert why is not None and why.fix == peer_env.BUILD_COMMAND == "python -m benchmarks.harness.peer_env build"


def test_new_peers_say_why_they_cannot_run(monkeypatch):
    from benchmarks.harness.adapters import llamacpp

    assert systems.expand_against(["ct2", "openvino"]) == ["ct2-int8", "ct2-fp32", "openvino-fp32", "openvino-int8"]
    assert systems.precision("ct2-int8") == systems.precision("openvino-int8") == "int8"
    real = systems.version
    monkeypatch.setattr(systems, "version", lambda p: None if p in ("openvino", "nncf", "ctranslate2") else real(p))
    assert "openvino" in str(systems.local_reason("openvino-fp32")) and "nncf" in str(systems.local_reason("openvino-int8"))
    why = systems.local_reason("ct2-int8")
    assert "ctranslate2" in str(why) and why.fix == "pip install ctranslate2"
    monkeypatch.setattr(llamacpp.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(Unavailable, match="no binary wheel"):
        systems.prepare(SystemSpec("llama.cpp", model_dir="/m"), __import__("pathlib").Path("/tmp"))


def test_ct2_converts_with_its_own_converter_and_matches_pytorch(tiny_model_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    from bowrt.export.parity import cosines
    from tests.reference import torch_reference
    from tests.tolerances import BATCH_INVARIANT_MIN_COS, assert_fp32_parity

    rng = np.random.default_rng(1)
    words = ["river", "hamlet", "capital", "france", "play", "wrote", "egypt", "nile"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.permutation(np.arange(1, 41))]
    ref = torch_reference(tiny_model_dir, texts, 256, pooling="cls")
    for name in ("ct2-fp32", "ct2-int8"):
        spec = systems.prepare(SystemSpec(name, model_dir=str(tiny_model_dir), threads=1), tmp_path)
        sys_ = systems.load(spec)
        got = sys_.encode(texts, "passage")
        if name == "ct2-fp32":  # row by row: the caller's order restored by the sorted batching both share
            assert_fp32_parity(got, ref)
        else:  # int8: close to PyTorch, row by row. Not a nearest-row test: centred (random weights point every
            # vector one way), CTranslate2's int8 on an AVX2-only host keeps as little as 0.35 of a row's own
            # direction, so a row can sit nearer another text's; the order is the fp32 case's, proved above
            assert cosines(got, ref).min() > 0.9999
        alone = np.concatenate([sys_.encode([t], "passage") for t in texts[:8]])
        assert cosines(alone, got[:8]).min() >= (BATCH_INVARIANT_MIN_COS if name == "ct2-fp32" else 0.99)
        assert sys_.encode([], "passage").shape[0] == 0


def test_pool_np_matches_the_torch_pooling():
    import torch

    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    for pooling in ("cls", "mean"):
        for normalize in (False, True):
            want = common.pool(torch.from_numpy(hidden), torch.from_numpy(mask), pooling, normalize).numpy()
            np.testing.assert_allclose(common.pool_np(hidden, mask, pooling, normalize), want, rtol=1e-6, atol=1e-6)


def test_paired_ratio_takes_the_best_peer_of_each_round():
    # Round 2 is slow for everyone: medians would pair bowrt's fast round with a peer's slow one.
    rows = {"st": {"rounds": [20.0, 10.0, 22.0]}, "ct2": {"rounds": [25.0, 8.0, 18.0]},
            "bowrt-int8": {"rounds": [30.0, 12.0, 33.0]}}
    got = report.paired(rows, higher=True)
    assert set(got) == {"bowrt-int8"}  # peers get no paired ratio
    assert got["bowrt-int8"]["median"] == pytest.approx(1.2) and got["bowrt-int8"]["min"] == pytest.approx(1.2)
    assert got["bowrt-int8"]["max"] == pytest.approx(1.5) and got["bowrt-int8"]["n"] == 3
    lat = report.paired({"st": {"rounds": [10.0, 20.0]}, "bowrt-int8": {"rounds": [8.0, 25.0]}}, higher=False)
    assert lat["bowrt-int8"]["min"] == pytest.approx(0.8) and lat["bowrt-int8"]["max"] == pytest.approx(1.25)
    # A peer dropped after round 1 counts only where it ran.
    short = report.paired({"st": {"rounds": [10.0]}, "ct2": {"rounds": [5.0, 5.0]}, "bowrt-fp32": {"rounds": [20.0, 15.0]}}, True)
    assert short["bowrt-fp32"]["median"] == pytest.approx(2.5)  # 20 / 10, then 15 / 5
    # The ratio of medians differs (30 / 20 = 1.5): it pairs rounds that did not run side by side.
    assert report.ratios({n: {"m": {"median": float(np.median(r["rounds"]))}} for n, r in rows.items()}, "m", True)[
        "bowrt-int8"][1] == pytest.approx(1.5)


def test_worker_figures_are_the_time_inside_the_worker():
    from benchmarks.harness.config import LATENCY_WARM_CALLS

    rec = {"latency": {"p": [[9.0] * 5]}, "corpus": {"p": [7.0]}}
    calls = [(0.010 + i, 0.002 * (i + 1)) for i in range(LATENCY_WARM_CALLS + 2)]
    rounds.inside_worker("p", "latency", rec, calls, kept=[LATENCY_WARM_CALLS, LATENCY_WARM_CALLS + 1])
    assert rec["latency"]["p"][-1] == pytest.approx([2.0 * (LATENCY_WARM_CALLS + 1), 2.0 * (LATENCY_WARM_CALLS + 2)])
    rounds.inside_worker("p", "corpus", rec, [(3.5, 3.0)])
    assert rec["corpus"]["p"] == [3.0]
    summary = rounds.ipc_summary(rec["ipc"])
    assert summary["p"]["corpus"]["median_ms"] == pytest.approx(500.0) and summary["p"]["latency"]["calls"] == len(calls)


def test_report_lists_the_peers_that_ran_in_the_worker(tmp_path):
    res = _fake_result()
    res["systems"]["st-onnx"] = {"status": "ok", "precision": "fp32", "batching": "b", "runs_in": "peer worker (python 3.11)"}
    res["ipc"] = {"st-onnx": {"latency": {"median_ms": 0.42, "max_ms": 1.0, "calls": 3}}}
    res["peer_env"] = {"venv": "/cache/peer-env-x", "built": "today"}
    md = report.markdown(res)
    assert "## Peers in the peer environment" in md and "| st-onnx | peer worker (python 3.11) | 0.42 | - |" in md
    assert "Peers in the peer environment" not in report.markdown(_fake_result())


def test_runner_times_a_worker_system_inside_the_worker(tiny_bundles):
    from benchmarks.harness.config import LATENCY_BLOCK, LATENCY_WARM_CALLS
    from benchmarks.harness.peer_client import WorkerSystem

    w = WorkerSystem(SystemSpec("bowrt-fp32", bundle=str(tiny_bundles["fp32"]), threads=1), sys.executable)
    texts = workloads.make_texts(tiny_bundles["fp32"] / "tokenizer.json", queries=8, corpus=8, seed=3)
    cfg = BenchConfig(quick=True, buckets=False)  # the buckets' calls, inside the worker too: test_corpus_buckets_are_...
    rec: dict = {}
    try:
        rounds.run_workload("w", w, "latency", texts, cfg, rec)
        lat = rec["latency"]["w"][-1]  # warm-up calls dropped, milliseconds inside the worker
        counted = [j for j in range(len(w.calls)) if j % LATENCY_BLOCK >= LATENCY_WARM_CALLS][: cfg.latency_calls]
        assert len(lat) == cfg.latency_calls and lat == [w.calls[j][1] * 1000 for j in counted]
        rounds.run_workload("w", w, "corpus", texts, cfg, rec)
        assert len(w.calls) == 1 and rec["corpus"]["w"] == [w.calls[0][1]]  # the corpus call, inside the worker
    finally:
        w.close()
    assert set(rec["ipc"]["w"]) == {"latency", "corpus"} and min(rec["ipc"]["w"]["latency"]) >= 0


def test_cpu_share_counts_a_live_worker_child_as_ours_not_as_other_processes():
    """The peer worker is a live child while the share is taken: its CPU time is the run's own.
    Asserted on the run's own account, which no other process on the machine can move."""
    if usage.machine_busy_s() is None:
        pytest.skip("no /proc/stat here")
    share = usage.CpuShare()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\nprint('done', flush=True)\ntime.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"  # it burnt ~1.5 s of CPU and is still alive
        child_cpu = usage._live_descendants_cpu()
        assert child_cpu >= 1.0
        # Counted as ours, though not reaped (os.times does not see it yet); 1e-6: float sums of 10 ms ticks.
        assert share.own_s() >= child_cpu - 1e-6
    finally:
        child.kill()
        child.wait()


def test_cpu_share_is_busy_time_less_the_runs_own_over_wall_time_and_cpus():
    """The share's arithmetic, on readings chosen here: 10 s of wall on 2 CPUs; the machine was busy
    12 s of CPU, the run (with its children) 9 s of it: others took 3 s, 15 % of the CPUs."""
    clock, busy, own = iter([100.0, 110.0]), iter([50.0, 62.0]), iter([1.0, 10.0])
    share = usage.CpuShare(busy=busy.__next__, own=own.__next__, clock=clock.__next__, cpus=2)
    assert share.others_fraction() == pytest.approx(0.15)
    assert usage.CpuShare(busy=lambda: None, own=lambda: 0.0).others_fraction() is None  # no /proc/stat
    # A run that used all the busy time and more (readings taken at slightly different moments): 0, never below.
    share = usage.CpuShare(busy=iter([0.0, 9.0]).__next__, own=iter([0.0, 10.0]).__next__,
                           clock=iter([0.0, 5.0]).__next__, cpus=2)
    assert share.others_fraction() == 0.0


# --- issue 25: the harness as one package, the demo's report --------------------------------------
def test_concurrency_runs_on_bowrt_systems_only_even_for_a_peer_with_an_encoder_attribute(tiny_bundles):
    """CTranslate2's adapter keeps its ``ctranslate2.Encoder`` as ``.encoder``; the warm-up once took
    it for a bowrt Encoder and dropped the peer. Concurrency drives bowrt's own batcher only."""
    from benchmarks.harness.adapters.bowrt_runtime import BowrtSystem

    class Ct2Like:
        batching, sorts_by_length, model_bytes = "b", True, 1
        encoder = object()  # no .batcher

        def encode(self, texts, kind):
            return np.zeros((len(texts), 4), np.float32)

    texts = workloads.make_texts(tiny_bundles["fp32"] / "tokenizer.json", queries=8, corpus=8, seed=3)
    loaded = {"ct2-int8": Ct2Like(), "bowrt-fp32": BowrtSystem(SystemSpec("bowrt-fp32", bundle=str(tiny_bundles["fp32"])))}
    info = {n: {"status": "ok"} for n in loaded}
    cfg = BenchConfig(quick=True, workloads=("latency", "concurrent"), rounds=1)
    log: list[str] = []
    warm = rounds.warm_up(loaded, info, texts, cfg, log.append)
    assert set(loaded) == {"ct2-int8", "bowrt-fp32"} and info["ct2-int8"]["status"] == "ok", log
    assert set(warm["concurrent"]) == {"bowrt-fp32"} and set(warm["latency"]) == set(loaded)
    assert not rounds.runs("ct2-int8", "concurrent") and rounds.runs("bowrt-int8-2", "concurrent")


def test_every_system_of_the_table_resolves_and_groups_expand_to_its_rows():
    from benchmarks.harness import adapters

    assert set(systems.NAMES) == set(adapters.PEERS) | set(adapters.GROUPS)
    for members in adapters.GROUPS.values():
        assert set(members) <= set(adapters.PEERS)
    assert all(systems.entry(n) is adapters.PEERS[n] for n in adapters.PEERS)
    assert systems.entry("bowrt-int8-2") is adapters.BOWRT and systems.precision("bowrt-int8-2") == "int8"
    with pytest.raises(ValueError, match="valid: torch"):
        systems.entry("onnx-magic")
    assert {systems.precision(n) for n in adapters.PEERS} <= {"fp32", "bf16", "int8"}


def _with_left_out(res: dict) -> dict:
    from benchmarks.harness.peer_env import BUILD_COMMAND

    for n in ("st-onnx", "st-onnx-O3", "st-onnx-int8", "openvino-fp32", "openvino-int8"):
        res["systems"][n] = {"status": "unavailable", "reason": f"{n} needs things: a long sentence; it runs in the "
                             "peer environment, which is not built", "fix": BUILD_COMMAND}
    res["systems"]["fastembed"] = {"status": "unavailable", "reason": "fastembed is not installed", "fix": "pip install fastembed"}
    res["systems"]["llama.cpp"] = {"status": "unavailable", "reason": "llama-cpp-python is not installed: no wheel here",
                                   "fix": None}
    res["systems"]["st"] = {"status": "skipped", "reason": "left out by --quick (time budget)", "fix": "without --quick"}
    return res


def test_summary_is_at_most_40_lines_with_every_left_out_system_in_one_line():
    from benchmarks.harness.summary import MAX_LINES, summary

    res = _with_left_out(_fake_result())
    corpus = res["workloads"]["corpus"]["results"]
    corpus["torch"]["rounds"], corpus["bowrt-fp32"]["rounds"] = [50.0, 45.0], [80.0, 90.0]
    lines = summary(res, "results/quick")
    assert len(lines) <= MAX_LINES
    left = [ln for ln in lines if ln.startswith("not run here:")]
    assert len(left) == 1
    assert "st-onnx, st-onnx-O3, st-onnx-int8, openvino-fp32, openvino-int8 (python -m benchmarks.harness.peer_env build)" in left[0]
    assert "fastembed (pip install fastembed)" in left[0] and "llama.cpp (llama-cpp-python is not installed)" in left[0]
    assert "optimum (not installed)" in left[0] and "st (without --quick)" in left[0]
    assert "| bowrt-fp32 | fp32 | 76 | 4.2 | 1.00000 | 1.000 | 1.000000 |" in lines, lines
    assert "  bowrt-fp32, corpus: 1.8x [1.6–2] the fastest peer of the same round" in lines, lines
    assert not any("| optimum |" in ln or "| st-onnx |" in ln for ln in lines)  # the table shows what ran
    assert lines[-1].startswith("full report: results/quick/results.md")
    many = _fake_result()  # a run of 60 systems still fits, and says where the rest is
    for i in range(60):
        many["systems"][f"p{i}"] = {"status": "ok", "precision": "fp32"}
    lines = summary(many, "r")
    assert len(lines) <= MAX_LINES and any("more lines in the report" in ln for ln in lines)
    md = report.markdown(_with_left_out(_fake_result()))
    assert md.count("`python -m benchmarks.harness.peer_env build`") == 5 and "| st | left out by --quick" in md


def test_third_party_output_goes_to_the_log_file_and_the_terminal_comes_back(tmp_path, capfd):
    """Python prints, raw writes to fds 1 and 2 and a child process's output all land in the log."""
    import os

    from benchmarks.harness.quiet import output_to

    log = tmp_path / "run" / "third_party.log"
    with output_to(log, "nncf: prepare"):
        print("a table from a library")
        os.write(2, b"a C++ warning\n")
        subprocess.run([sys.executable, "-c", "print('a child process')"], check=True)
    print("bowrt's own line")
    out, err = capfd.readouterr()
    assert out == "bowrt's own line\n" and err == ""
    text = log.read_text()
    assert "=== nncf: prepare" in text and "a table from a library" in text and "a C++ warning" in text
    assert "a child process" in text
    with pytest.raises(RuntimeError), output_to(log, "a failure"):
        raise RuntimeError("boom")
    print("still here")
    assert capfd.readouterr().out == "still here\n"


def test_quick_keeps_the_reference_and_the_ct2_peers_and_places_every_other_peer_in_its_drop_order():
    """--quick may leave peers out for time; the reference and CTranslate2 (int8 and fp32, the main
    environment's strongest peers) always run. A peer added to the table must be placed in one list."""
    from benchmarks.harness import adapters, budget
    from benchmarks.harness.config import QUICK_DROP_ORDER, QUICK_KEEP

    assert set(QUICK_KEEP).isdisjoint(QUICK_DROP_ORDER)
    assert set(QUICK_KEEP) | set(QUICK_DROP_ORDER) == set(adapters.PEERS)
    names = ["torch", "ct2-int8", "ct2-fp32", "ort-qint8", "st", "bowrt-fp32", "bowrt-int8"]
    texts = workloads.Texts(["q?"] * 40, [10] * 40, ["p"] * 32, [128] * 32, ["c"] * 1000, [200] * 1000)
    config = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
    slow = {n: 1e9 for n in names}  # 1 GFLOP/s: nothing fits, so everything that may go goes
    kept, cfg, cut = budget.fit_quick(BenchConfig(quick=True), names, texts, config, slow, lambda m: None, notes := [])
    assert kept == ["torch", "ct2-int8", "ct2-fp32", "bowrt-fp32", "bowrt-int8"]
    assert len(cut.corpus) == cfg.corpus_size < 1000 and "left out st, ort-qint8 " in notes[0]


def test_bench_paired_pairs_the_kth_runs_and_inverts_latency():
    from benchmarks.studies.bench_paired import pair_ratios

    def res(lat: float, corpus: float) -> dict:
        return {"workloads": {"latency": {"results": {"bowrt-int8": {"p50_ms": {"median": lat}}}},
                              "corpus": {"results": {"bowrt-int8": {"items_per_s": {"median": corpus}},
                                                     "torch": {"items_per_s": {"median": None}}}}}}

    got = pair_ratios([res(10.0, 20.0), res(12.0, 18.0)], [res(8.0, 22.0), res(12.0, 18.0), res(1.0, 1.0)])
    assert got[("latency", "bowrt-int8")] == pytest.approx([1.25, 1.0])  # 10 ms -> 8 ms is 1.25x faster
    assert got[("corpus", "bowrt-int8")] == pytest.approx([1.1, 1.0])
    assert ("corpus", "torch") not in got  # no figure on either side: no ratio


# --- issue 26: interleaved batch-1 latency, the corpus by length, the frontier plots -------------
class _Clock:
    """A clock that moves only when a fake system works: exact, repeatable timings (stands in for ``time``)."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        pass


class _Fake:
    """A system whose call costs ``ms(texts)`` on the clock; it logs (name, first text) per call and
    raises on its ``fail_at``-th call."""

    batching, sorts_by_length, model_bytes = "b", True, 1

    def __init__(self, name, clock, order, ms, fail_at=None):
        self.name, self.clock, self.order, self.ms, self.fail_at, self.n = name, clock, order, ms, fail_at, 0

    def encode(self, texts, kind):
        self.order.append((self.name, texts[0]))
        self.n += 1
        if self.n == self.fail_at:
            raise RuntimeError("boom")
        self.clock.t += self.ms(texts) / 1000.0
        return np.zeros((len(texts), 4), np.float32)


class _FakeBowrt(_Fake):
    """Keeps (seconds, timings) per call while ``record`` is set, as BowrtSystem does."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.record, self.log = False, []

    def encode(self, texts, kind):
        t0 = self.clock.t
        out = super().encode(texts, kind)
        if self.record:
            self.log.append((self.clock.t - t0, "timings"))
        return out


class _FakeWorker(_Fake):
    """A peer worker: ``calls`` gets (round trip s, inside the worker s); the worker's share is ``inner`` of it."""

    def __init__(self, *args, inner=0.5, **kw):
        super().__init__(*args, **kw)
        self.calls, self.inner = [], inner

    def encode(self, texts, kind):
        t0 = self.clock.t
        out = super().encode(texts, kind)
        self.calls.append((self.clock.t - t0, (self.clock.t - t0) * self.inner))
        return out


@pytest.fixture()
def fake_clock(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(workloads, "time", clock)
    monkeypatch.setattr(rounds, "PAUSE_S", 0.0)
    return clock


def _texts(corpus_tokens: list[int], queries: int = 7) -> workloads.Texts:
    corpus = [" ".join(["w"] * n) for n in corpus_tokens]  # a passage's token count is its word count here
    return workloads.Texts([f"q{i}?" for i in range(queries)], [8] * queries, ["b"] * 32, [128] * 32, corpus, corpus_tokens)


def test_latency_is_interleaved_in_turns_and_a_failing_system_leaves_the_others_samples(fake_clock):
    from benchmarks.harness import gather
    from benchmarks.harness.config import LATENCY_BLOCK, LATENCY_WARM_CALLS

    order: list = []
    fail_at = LATENCY_BLOCK + 5  # st raises in its second turn of round 1
    loaded = {"torch": _Fake("torch", fake_clock, order, lambda t: 3.0),
              "ct2-int8": _FakeWorker("ct2-int8", fake_clock, order, lambda t: 4.0, inner=0.5),  # 2 ms inside
              "bowrt-fp32": _FakeBowrt("bowrt-fp32", fake_clock, order, lambda t: 1.0),
              "st": _Fake("st", fake_clock, order, lambda t: 0.5, fail_at=fail_at)}
    info = {n: {"status": "ok"} for n in loaded}
    texts, cfg = _texts([30] * 4), BenchConfig(quick=True, workloads=("latency",), rounds=2)
    rec = rounds.measured_rounds(loaded, info, texts, cfg, lambda m: None)
    q, block = texts.queries, LATENCY_BLOCK
    # Turn t: each system makes calls t*block .. (t+1)*block - 1 (call j: query j), the order rotated a turn.
    assert order[:2 * block] == [("torch", q[j % len(q)]) for j in range(block)] + [
        ("ct2-int8", q[j % len(q)]) for j in range(block)]
    names, turns, expected = list(info), -(-cfg.latency_calls // (block - LATENCY_WARM_CALLS)), []
    for r in range(2):
        for t in range(turns):
            alive = names if (r, t) <= (0, 1) else names[:3]  # st raised in turn 2 of round 1: it leaves
            k = (t + r) % len(alive)
            for n in alive[k:] + alive[:k]:
                last = fail_at if n == "st" and (r, t) == (0, 1) else (t + 1) * block  # st: up to the call that raised
                expected += [(n, q[j % len(q)]) for j in range(t * block, last)]
    assert order == expected
    assert "st" not in loaded and info["st"]["status"] == "unavailable" and "round 1 (latency)" in info["st"]["reason"]
    lat = rec["latency"]
    assert set(lat) == {"torch", "ct2-int8", "bowrt-fp32"} and all(len(v) == 2 for v in lat.values())
    for n, ms in (("torch", 3.0), ("ct2-int8", 2.0), ("bowrt-fp32", 1.0)):  # ct2: the time inside the worker
        assert [len(r) for r in lat[n]] == [cfg.latency_calls] * 2 and np.allclose(lat[n], ms), n
    assert len(rec["timings"]["bowrt-fp32"]) == 2 * cfg.latency_calls  # the overhead table's calls, warm-up dropped
    assert np.allclose(rec["ipc"]["ct2-int8"]["latency"], 2.0) and len(rec["ipc"]["ct2-int8"]["latency"]) == 2 * turns * block
    got = gather.latency_results(lat, texts, {"latency": 1.0}, {}, cfg)["results"]
    assert got["bowrt-fp32"]["paired_per_call"]["median"] == pytest.approx(2.0)  # against ct2's 2 ms, not torch's 3
    assert got["bowrt-fp32"]["paired_per_call"]["peers"] == ["ct2-int8"] * 2 and "paired_per_call" not in got["torch"]


def test_latency_turns_count_the_same_calls_of_every_system_and_drop_each_turns_first():
    seen: dict = {}

    def enc(name):
        def f(texts, kind):
            seen.setdefault(name, []).append(texts[0])
            return np.zeros((1, 2), np.float32)
        return f

    samples, kept, failed = workloads.interleaved_latency({"a": enc("a"), "b": enc("b")}, [f"q{i}" for i in range(5)], 7,
                                                          block=4, warm=1)
    assert kept == [1, 2, 3, 5, 6, 7, 9] and not failed  # 3 counted per turn, 7 in all
    assert seen["a"] == seen["b"] == [f"q{j % 5}" for j in range(12)]  # call j of each: the same query
    assert all(len(v) == 12 for v in samples.values())
    with pytest.raises(OptionError, match="leaves none counted"):
        workloads.interleaved_latency({"a": enc("a")}, ["q"], 3, block=2, warm=2)


def test_paired_per_call_is_against_the_fastest_peer_of_each_round():
    from benchmarks.harness.gather import paired_per_call

    # Round 1: st has the lower p50 (10 vs 12); round 2: ct2 (20 vs 30). Over both rounds ct2's median p50
    # is lower (16 vs 20): pairing every round with ct2 would give 2.4 in round 1.
    rec = {"st": [[10.0, 10.0, 10.0], [30.0, 30.0, 30.0]], "ct2-int8": [[12.0, 40.0, 12.0], [20.0, 20.0, 20.0]],
           "bowrt-int8": [[5.0, 5.0, 5.0], [10.0, 10.0, 10.0]]}
    got = paired_per_call(rec)
    assert set(got) == {"bowrt-int8"}
    assert got["bowrt-int8"]["rounds"] == pytest.approx([2.0, 2.0]) and got["bowrt-int8"]["peers"] == ["st", "ct2-int8"]
    assert got["bowrt-int8"]["median"] == pytest.approx(2.0) and got["bowrt-int8"]["n"] == 2
    # The median of per-call ratios, not the ratio of p50s (10 / 3 here): calls pair up by turn.
    one = paired_per_call({"st": [[10.0, 10.0, 10.0, 1.0, 100.0]], "bowrt-fp32": [[3.0, 1.0, 2.0, 5.0, 4.0]]})
    assert one["bowrt-fp32"]["median"] == pytest.approx(5.0)
    assert paired_per_call({"bowrt-fp32": [[1.0]]}) == {}  # no peer, no ratio


def test_corpus_buckets_partition_the_corpus_by_token_count():
    from benchmarks.harness.config import CORPUS_BUCKETS

    tokens = [64, 65, 20, 128, 129, 256, 100, 300]
    texts = _texts(tokens)
    got = workloads.corpus_buckets(texts, CORPUS_BUCKETS)
    assert list(got) == ["<=64", "65-128", "129-256"]
    assert got["<=64"][1] == [64, 20] and got["65-128"][1] == [65, 128, 100]
    assert got["129-256"][1] == [129, 256, 300]  # anything longer goes to the last bucket
    assert got["65-128"][0] == [texts.corpus[i] for i in (1, 3, 6)]  # the same texts, in corpus order
    placed = [p for passages, _ in got.values() for p in passages]
    assert sorted(placed) == sorted(texts.corpus) and len(placed) == len(texts.corpus)  # each exactly once
    assert list(workloads.corpus_buckets(_texts([20, 30]), CORPUS_BUCKETS)) == ["<=64"]  # empty buckets left out


def test_corpus_buckets_are_measured_bucket_by_bucket_and_paired_with_each_buckets_fastest_peer(fake_clock):
    from benchmarks.harness import gather
    from benchmarks.harness.config import CORPUS_BUCKETS

    def per_token(short: float, long: float):
        return lambda texts: sum((short if len(t.split()) <= 64 else long) * len(t.split()) for t in texts)

    order: list = []
    loaded = {"st": _Fake("st", fake_clock, order, per_token(0.1, 1.0)),  # fast on short passages only
              "ct2-int8": _FakeWorker("ct2-int8", fake_clock, order, per_token(1.0, 1.0), inner=0.5),  # 0.5 inside
              "bowrt-fp32": _Fake("bowrt-fp32", fake_clock, order, per_token(0.25, 0.25))}
    info = {n: {"status": "ok"} for n in loaded}
    texts = _texts([30, 200, 40, 100, 60, 250])
    cfg = BenchConfig(workloads=("corpus",), rounds=2)
    assert "corpus_buckets" not in rounds.warm_up(loaded, info, texts, cfg, lambda m: None)  # none in the warm-up
    order.clear()
    rec = rounds.measured_rounds(loaded, info, texts, cfg, lambda m: None)
    # Each round: every system's corpus call, then bucket by bucket, every system's turn on it (the
    # order rotating by one a round), so that a bucket's calls lie next to each other.
    firsts = {lb: passages[0] for lb, (passages, _) in workloads.corpus_buckets(texts, CORPUS_BUCKETS).items()}
    per_round = [order[k:k + 12] for k in (0, 12)]
    assert [n for n, _ in per_round[0]] == ["st", "ct2-int8", "bowrt-fp32"] * 4
    assert [n for n, _ in per_round[1]] == ["ct2-int8", "bowrt-fp32", "st"] * 4
    for calls in per_round:
        assert [t for _, t in calls[3:]] == [firsts[lb] for lb in firsts for _ in range(3)]
    assert rec["corpus"]["ct2-int8"] == pytest.approx([0.5 * sum(texts.corpus_tokens) / 1000] * 2)  # inside the worker
    assert rec["corpus_buckets"]["ct2-int8"]["<=64"] == pytest.approx([0.5 * 130 / 1000] * 2)
    assert rec["corpus_buckets"]["st"]["65-128"] == pytest.approx([1.0 * 100 / 1000] * 2)
    flops = {"corpus": 1.0, "corpus <=64": 1e9}
    out = gather.gather(rec, texts, flops, {"best": {"fp32": 100.0}}, cfg)["corpus"]["buckets"]
    assert {lb: b["passages"] for lb, b in out.items()} == {"<=64": 3, "65-128": 1, "129-256": 2}
    bowrt = {lb: b["results"]["bowrt-fp32"] for lb, b in out.items()}
    assert bowrt["<=64"]["items_per_s"]["median"] == pytest.approx(3 / (0.25 * 130 / 1000))
    assert bowrt["<=64"]["paired"]["median"] == pytest.approx(0.4)  # st's 0.1 ms/token, not ct2's 0.5
    assert bowrt["65-128"]["paired"]["median"] == pytest.approx(2.0)  # ct2's 0.5, not st's 1.0
    assert bowrt["129-256"]["paired"]["n"] == 2 and "paired" not in out["<=64"]["results"]["st"]
    # 1 GFLOP in bowrt's 0.25 * 130 ms, over a 100 GFLOP/s ceiling
    assert bowrt["<=64"]["ceiling_fraction"] == pytest.approx(1.0 / (0.25 * 130 / 1000) / 100.0)


def test_piece_order_spreads_every_systems_batches_over_the_whole_call():
    turns = workloads.piece_order({"a": 2, "b": 6, "c": 0, "d": 1}, shift=1)
    assert sorted(turns) == [("a", 0), ("a", 1)] + [("b", k) for k in range(6)] + [("d", 0)]  # each piece once
    assert [n for n, _ in turns] == ["b", "d", "a", "b", "b", "b", "a", "b", "b"]  # rotated: b d a; c has none
    for n in ("a", "b"):  # each system's pieces come in order
        assert [k for m, k in turns if m == n] == sorted(k for m, k in turns if m == n)
    # Halfway through the turns, each system is about halfway through its own pieces.
    even = workloads.piece_order({"x": 4, "y": 40})
    first_half = even[: len(even) // 2]
    assert sum(n == "x" for n, _ in first_half) == 2 and sum(n == "y" for n, _ in first_half) == 20
    assert workloads.piece_order({}) == []


def test_batch_groups_must_cover_every_passage_exactly_once():
    assert workloads.check_groups([[2, 0], [1]], 3) == [[2, 0], [1]]
    for bad in ([[0, 1]], [[0, 1], [1, 2]], [[0, 1, 2], []], [[0, 1, 3]]):
        with pytest.raises(ValueError, match="exactly once"):
            workloads.check_groups(bad, 3)


class _Batched(_Fake):
    """A fake system with ``batches``: groups of ``rows`` in the caller's order."""

    def __init__(self, *args, rows=2, bad=False, **kw):
        super().__init__(*args, **kw)
        self.rows, self.bad = rows, bad

    def batches(self, texts, kind):
        groups = [list(range(s, min(s + self.rows, len(texts)))) for s in range(0, len(texts), self.rows)]
        return groups[1:] if self.bad else groups  # bad: loses the first group's passages


def test_corpus_runs_batch_by_batch_in_turns_and_a_bad_system_leaves_the_others(fake_clock):
    order: list = []
    per_word = lambda texts: sum(len(t.split()) for t in texts)  # noqa: E731
    loaded = {"st": _Batched("st", fake_clock, order, per_word, rows=2),
              "ct2-int8": _FakeWorker("ct2-int8", fake_clock, order, per_word, inner=0.5),  # no batches: one call
              "bowrt-fp32": _Batched("bowrt-fp32", fake_clock, order, lambda t: 0.5 * per_word(t), rows=1),
              "torch": _Batched("torch", fake_clock, order, per_word, bad=True)}
    texts = _texts([10, 20, 30, 40])
    rec: dict = {}
    seconds, failed = rounds.corpus_turns(loaded, texts.corpus, rec)
    assert set(failed) == {"torch"} and "exactly once" in str(failed["torch"])  # its groups lost passages
    first = {t: i for i, t in enumerate(texts.corpus)}
    got = [(n, first[t]) for n, t in order]
    # st: 2 groups of 2, ct2: the whole list, bowrt: 4 groups of 1, spread over the same turns.
    assert got == [("st", 0), ("ct2-int8", 0), ("bowrt-fp32", 0), ("bowrt-fp32", 1), ("st", 2),
                   ("bowrt-fp32", 2), ("bowrt-fp32", 3)]
    total = sum(texts.corpus_tokens) / 1000
    assert seconds == pytest.approx({"st": total, "ct2-int8": 0.5 * total, "bowrt-fp32": 0.5 * total})
    assert rec["ipc"]["ct2-int8"]["corpus"] == pytest.approx([0.5 * total * 1000])
    # One that raises in its second turn is out of the rest; the others still encode everything.
    order.clear()
    loaded = {"st": _Batched("st", fake_clock, order, per_word, rows=1, fail_at=2),
              "bowrt-fp32": _Batched("bowrt-fp32", fake_clock, order, per_word, rows=2)}
    seconds, failed = rounds.corpus_turns(loaded, texts.corpus, {}, shift=1)
    assert list(failed) == ["st"] and seconds == pytest.approx({"bowrt-fp32": total})
    assert [n for n, _ in order] == ["bowrt-fp32", "st", "st", "bowrt-fp32"]


def test_bowrt_batch_groups_run_exactly_the_batches_of_the_whole_call(tiny_bundles):
    from benchmarks.harness.adapters.bowrt_runtime import BowrtSystem
    from benchmarks.harness.adapters.common import BATCH
    from benchmarks.harness.spec import SystemSpec

    sys_ = BowrtSystem(SystemSpec("bowrt-fp32", bundle=str(tiny_bundles["fp32"])))
    sys_.encoder.max_batch_tokens = 96  # several batches per group on these short passages
    rng = np.random.default_rng(3)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    passages = [" ".join(rng.choice(words, int(n))) for n in rng.integers(1, 40, 150)]
    groups = sys_.batches(passages, "passage")
    assert workloads.check_groups(groups, len(passages)) and len(groups) > 2
    assert all(len(g) >= BATCH for g in groups[:-1])
    whole = sys_.encoder.encode_timed("passage", passages)
    parts = [sys_.encoder.encode_timed("passage", [passages[i] for i in g]) for g in groups]
    # The same batches: as many, with as many padded tokens, as one call with the whole list.
    assert sum(p.timings.batches for p in parts) == whole.timings.batches
    assert sum(p.timings.padded_tokens for p in parts) == whole.timings.padded_tokens
    for g, p in zip(groups, parts):
        np.testing.assert_array_equal(p.vectors, whole.vectors[g])


def _frontier_result() -> dict:
    res = _fake_result()
    s = report.summarize
    for wl, v in (("corpus", 120.0), ("latency", 2.0)):
        metric = "items_per_s" if wl == "corpus" else "p50_ms"
        res["workloads"][wl]["results"]["bowrt-int8"] = {metric: s([v, v * 1.1]), "rounds": [v, v * 1.1]}
        res["workloads"][wl]["results"]["st"] = {metric: s([v / 2]), "rounds": [v / 2, v / 2]}  # no accuracy figure
    res["systems"]["bowrt-int8"] = {"status": "ok", "precision": "int8"}
    res["systems"]["st"] = {"status": "ok", "precision": "fp32"}
    ok = {"status": "ok", "mean_cosine": 1.0, "overlap_at_10": 1.0, "batch_invariance_min_cosine": 1.0}
    res["accuracy"]["results"].update({"torch": {**ok, "min_cosine": 1.0}, "bowrt-int8": {**ok, "min_cosine": 0.9995}})
    res["workloads"]["corpus"]["buckets"] = {lb: {"passages": 10, "results": {
        n: {"items_per_s": s([f * v]), "rounds": [f * v], **({"paired": s([f])} if n.startswith("bowrt") else {})}
        for n, v in (("torch", 50.0), ("st", 60.0), ("bowrt-fp32", 80.0), ("bowrt-int8", 90.0))}}
        for lb, f in (("<=64", 2.0), ("65-128", 1.0))}
    lat = res["workloads"]["latency"]["results"]
    lat["torch"]["rounds"], lat["bowrt-fp32"]["rounds"] = [10.0, 11.0], [4.0, 4.4]
    lat["bowrt-fp32"]["paired_per_call"] = s([2.5, 2.4])
    return res


def test_frontier_plots_leave_out_systems_without_accuracy(tmp_path):
    from benchmarks.harness import frontier
    from benchmarks.harness.summary import MAX_LINES, summary

    res = _frontier_result()
    assert [p[0] for p in frontier.frontier_points(res, "corpus")] == ["torch", "bowrt-fp32", "bowrt-int8"]  # no st
    assert [p[0] for p in frontier.frontier_points(res, "corpus", "<=64")] == ["torch", "bowrt-fp32", "bowrt-int8"]
    paths = report.write_report(res, tmp_path)
    for name in ("frontier_corpus", "frontier_latency"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["md"].read_text()
    assert "](frontier_corpus.png)" in md and "](frontier_latency.png)" in md
    assert "## Corpus by passage length" in md and "| bowrt-int8 | 180 | 90 | 2 | 1 |" in md
    assert "x best peer, per call" in md and "| 2.45 [2.4–2.5] |" in md
    lines = summary(res, "r")
    assert len(lines) <= MAX_LINES
    assert "  bowrt-int8, corpus by length (tokens): <=64 2x, 65-128 1x" in lines, lines
    assert any(ln.startswith("  bowrt-fp32, batch 1:") and ln.endswith("call against call 2.45x [2.4–2.5]") for ln in lines)
    res["accuracy"] = None  # no accuracy table: no frontier, and no error
    paths = report.write_report(res, tmp_path / "no-accuracy")
    assert "frontier_corpus" not in paths and "Speed against accuracy" not in paths["md"].read_text()


def test_bowrt_system_names_carry_the_int8_profile():
    from types import SimpleNamespace

    from benchmarks.harness.resolve import bundle_variant
    from benchmarks.harness.spec import bowrt_variant

    assert [bowrt_variant(n) for n in ("bowrt-int8", "bowrt-int8-2", "bowrt-int8-speed", "bowrt-int8-speed-3")] == [
        "int8", "int8", "int8-speed", "int8-speed"]
    assert systems.precision("bowrt-int8-speed") == "int8" and systems.precision("bowrt-fp32-1") == "fp32"
    speed = SimpleNamespace(variant="int8", quantization={"profile": "speed"})
    assert bundle_variant(speed) == "int8-speed"
    assert bundle_variant(SimpleNamespace(variant="int8", quantization={"method": "smoothquant"})) == "int8"  # 0.4 bundles
    assert bundle_variant(SimpleNamespace(variant="fp32", quantization=None)) == "fp32"
