"""bowrt.scale.ray_encode on a local Ray cluster: same vectors and output format as the single-process job."""

from __future__ import annotations

import json

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'bowrt[scale]' or 'ray[data]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")

from bowrt.corpus import encode_corpus, load_corpus  # noqa: E402
from bowrt.scale.ray_encode import encode_corpus_ray  # noqa: E402
from tests.tolerances import SAME_BUNDLE_ATOL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_job_equals_single_process_job(cluster, tiny_bundles, tmp_path):
    bundle = tiny_bundles["fp32"]
    src = tmp_path / "c.jsonl"
    rows = [{"id": f"d{i}", "text": f"passage {i} " + "about things " * (i % 9), "title": f"T{i}" if i % 3 else None}
            for i in range(150)]
    rows.insert(20, "not an object")
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))

    r = encode_corpus_ray(bundle, src, tmp_path / "ray", shard_size=100, batch_size=32, progress=False)
    assert (r.total, r.rejects, r.shards, r.shards_written) == (150, 1, 2, 2)
    local = encode_corpus(bundle, src, tmp_path / "local", shard_size=100, threads=1, progress=False)
    assert local.total == 150

    ids_ray, vecs_ray = load_corpus(tmp_path / "ray")
    ids_local, vecs_local = load_corpus(tmp_path / "local")
    assert ids_ray == ids_local == [f"d{i}" for i in range(150)]
    np.testing.assert_allclose(vecs_ray, vecs_local, atol=SAME_BUNDLE_ATOL)
    a = json.loads((tmp_path / "ray" / "index.json").read_text())
    b = json.loads((tmp_path / "local" / "index.json").read_text())
    assert [s["sha256"]["ids"] for s in a["shards"]] == [s["sha256"]["ids"] for s in b["shards"]]
    assert (tmp_path / "ray" / "rejects.jsonl").read_text() == (tmp_path / "local" / "rejects.jsonl").read_text()

    # Resume: a finished job reruns without encoding anything.
    again = encode_corpus_ray(bundle, src, tmp_path / "ray", shard_size=100, batch_size=32, progress=False)
    assert (again.shards_written, again.shards_reused) == (0, 2)
