"""One bundle, one set of vectors (DESIGN.md): the same texts through every path that runs here.

Encoder.encode_*, its dynamic batcher, the HTTP server, ``bowrt encode``, Ray, and the
Triton repository's graph run by ONNX Runtime as Triton's onnxruntime backend runs it,
on a bundle with ``normalize: true`` (all-MiniLM-L6-v2) and one without (tiny BERT).
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime as ort
import pytest

from bowrt import Encoder
from bowrt.cli import main
from bowrt.corpus import load_corpus
from bowrt.scale.triton import export_triton, triton_inputs
from tests.tolerances import SAME_BUNDLE_ATOL

QUERIES = ["who wrote hamlet?", "q", "capital of france", "ÉCOLE normale supérieure 🎓", "when did the wall fall " * 12]
PASSAGES = [{"title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."}, "The Berlin Wall fell in 1989.",
            {"title": "Paris", "text": "Paris is the capital of France. " * 40}, "short"]
ITEMS = {"query": QUERIES, "passage": PASSAGES}


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for the module when Ray Data is installed (the scale extra), else None."""
    try:
        import ray
        import ray.data
    except ImportError:
        yield None
        return
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def _corpus(tmp_path, kind):
    path = tmp_path / f"{kind}.jsonl"
    rows = [it if isinstance(it, dict) else {"text": it} for it in ITEMS[kind]]
    path.write_text("".join(json.dumps({"id": f"{kind}{i}", **r}, ensure_ascii=False) + "\n" for i, r in enumerate(rows)),
                    encoding="utf-8")
    return path


def _bowrt_encode(bundle, tmp_path, kind):
    out = tmp_path / f"encode-{kind}"
    assert main(["encode", str(bundle), str(_corpus(tmp_path, kind)), "-o", str(out), "--kind", kind,
                 "--threads", "1", "--no-progress"]) == 0
    return load_corpus(out)[1]


def _ray_encode(bundle, tmp_path, kind):
    from bowrt.scale.ray_encode import encode_corpus_ray

    r = encode_corpus_ray(bundle, _corpus(tmp_path, kind), tmp_path / f"ray-{kind}", kind=kind, batch_size=2,
                          progress=False)
    return load_corpus(r.outdir)[1]


def _triton(model_dir, kind):
    """What Triton's onnxruntime backend runs: the repository's graph on the client's padded tensors,
    in requests of at most the config's max_batch_size rows."""
    config = (model_dir / "config.pbtxt").read_text()
    (max_batch,) = re.findall(r"^max_batch_size: (\d+)$", config, re.MULTILINE)
    (output,) = re.findall(r'^output \[\n  \{\n    name: "(\w+)"', config, re.MULTILINE)
    sess = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    items, step = ITEMS[kind], int(max_batch)
    return np.concatenate([sess.run([output], triton_inputs(model_dir, items[i:i + step], kind))[0]
                           for i in range(0, len(items), step)])


def _http(enc):
    pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
    pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")
    from bowrt.serve import create_app
    from tests.test_serve import Running

    got = {}
    with Running(create_app(enc)) as srv:
        for kind, items in ITEMS.items():
            status, vecs = srv.post("/embed", {"inputs": items, "kind": kind})
            assert status == 200, vecs
            got[kind] = np.array(vecs, dtype=np.float32)
    return got


@pytest.mark.parametrize("which", ["minilm-normalize", "tiny-raw"])
def test_every_path_gives_the_same_vectors(which, minilm_bundles, tiny_bundles, ray_cluster, tmp_path):
    bundle = minilm_bundles["fp32"] if which.startswith("minilm") else tiny_bundles["fp32"]
    enc = Encoder(bundle, threads=1)
    assert enc.manifest.normalize is (which == "minilm-normalize")
    want = {"query": enc.encode_queries(QUERIES), "passage": enc.encode_passages(PASSAGES)}
    norms = np.linalg.norm(np.concatenate(list(want.values())), axis=1)
    assert np.allclose(norms, 1.0, atol=SAME_BUNDLE_ATOL) is enc.manifest.normalize

    model_dir = export_triton(bundle, tmp_path / "repo")
    http = _http(enc)
    paths = {"http": lambda kind: http[kind],
             "bowrt encode": lambda kind: _bowrt_encode(bundle, tmp_path, kind),
             "triton": lambda kind: _triton(model_dir, kind)}
    if ray_cluster is not None:
        paths["ray"] = lambda kind: _ray_encode(bundle, tmp_path, kind)
    for kind, items in ITEMS.items():
        with enc.batcher(kind, max_wait_ms=5) as batcher:
            paths_got = {"batcher": batcher.encode(items)}
        paths_got.update({name: run(kind) for name, run in paths.items()})
        for name, got in paths_got.items():
            assert got.shape == want[kind].shape, (name, kind)
            np.testing.assert_allclose(got, want[kind], atol=SAME_BUNDLE_ATOL, rtol=0, err_msg=f"{name}, {kind}")


# --- every writer's output follows the umask (bowrt/atomic.py) ---------------------------
def _modes(folder):
    """{"dirs": modes, "files": modes} of ``folder`` and everything under it."""
    import stat

    found = {"dirs": {stat.S_IMODE(folder.stat().st_mode)}, "files": set()}
    for p in folder.rglob("*"):
        found["dirs" if p.is_dir() else "files"].add(stat.S_IMODE(p.stat().st_mode))
    return found


@pytest.mark.parametrize("umask, dirs, files", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_bundles_repositories_and_encode_outputs_follow_the_umask(umask, dirs, files, tiny_model_dir, tiny_bundles,
                                                                  minilm_bundles, tmp_path):
    import os

    from bowrt.export import export_model

    old = os.umask(umask)
    try:
        export_model(str(tiny_model_dir), tmp_path / "bundles", ("fp32",), log=lambda _m: None)
        export_triton(tiny_bundles["fp32"], tmp_path / "repo")
        export_triton(minilm_bundles["fp32"], tmp_path / "repo", "normalized")  # the graph written, not copied
        assert main(["encode", str(tiny_bundles["fp32"]), str(_corpus(tmp_path, "passage")), "-o", str(tmp_path / "vecs"),
                     "--shard-size", "2", "--threads", "1", "--no-progress"]) == 0
    finally:
        os.umask(old)
    for folder in (tmp_path / "bundles", tmp_path / "repo", tmp_path / "vecs"):
        assert _modes(folder) == {"dirs": {dirs}, "files": {files}}, folder
