"""Where does a call spend its time outside the model? Micro-benchmarks of the runtime's hot paths (pytest-benchmark).

Answer: docs/benchmarks.md, "Runtime overhead at batch 1 (bowrt)" (the bench's end-to-end
figure; these split it by stage).

    pytest benchmarks/studies/test_hotpaths.py --benchmark-only                          # a tiny BERT built here (seconds)
    BOWRT_BENCH_BUNDLE=bundles/fp32 pytest benchmarks/studies/test_hotpaths.py --benchmark-only   # a real bundle

Stages as the Encoder runs them: tokenize (query / 32 passages), plan the
batches of a 1,000-passage corpus, pad a 32 x 128 batch, one session run of
it, the post step (rows back to the caller's order, optional L2 normalization
over 1,000 x hidden), and a whole batch-1 query. Not part of ``make test``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness import workloads
from bowrt.runtime import Encoder, plan_batches
from bowrt.runtime.tokenize import pad_batch


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    given = os.environ.get("BOWRT_BENCH_BUNDLE")
    if given:
        return Path(given)
    from benchmarks.harness.models import RANDOM_WEIGHT_GATES, make_bert_folder
    from bowrt.export import export_model

    model = make_bert_folder(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=128)
    out = tmp_path_factory.mktemp("bundles") / "b"
    export_model(str(model), out, ("fp32",), force=True, gates=RANDOM_WEIGHT_GATES, log=lambda _m: None)
    return out / "fp32"


@pytest.fixture(scope="module")
def enc(bundle) -> Encoder:
    return Encoder(bundle, providers="cpu")


@pytest.fixture(scope="module")
def texts(bundle) -> workloads.Texts:
    return workloads.make_texts(bundle / "tokenizer.json", queries=64, corpus=1000)


def test_tokenize_one_query(benchmark, enc, texts):
    tokens = benchmark(enc.tokenize_queries, texts.queries[:1])
    assert len(tokens) == 1


def test_tokenize_32_passages_of_128(benchmark, enc, texts):
    tokens = benchmark(enc.tokenize_passages, texts.batch)
    assert tokens.lengths == [128] * 32


def test_plan_batches_of_a_1000_passage_corpus(benchmark, texts):
    plan = benchmark(plan_batches, texts.corpus_tokens, 8192, 256)
    assert sorted(i for b in plan for i in b) == list(range(len(texts.corpus_tokens)))


def test_pad_a_32x128_batch(benchmark, enc, texts):
    rows = list(enc.tokenize_passages(texts.batch).ids)
    ids, mask = benchmark(pad_batch, rows, 0)
    assert ids.shape == mask.shape == (32, 128)


def test_session_run_32x128(benchmark, enc, texts):
    ids, mask = pad_batch(list(enc.tokenize_passages(texts.batch).ids), 0)
    out = benchmark(enc._session.run, ids, mask)  # the ORT call itself, feeds included
    assert out.shape == (32, enc.dim)


def test_post_restore_order_and_normalize(benchmark, enc):
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((1000, enc.dim), dtype=np.float32)
    order = rng.permutation(1000)

    def post() -> np.ndarray:
        out = np.empty_like(vecs)
        out[order] = vecs  # what encode_tokens does per batch
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    out = benchmark(post)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_encode_one_query_end_to_end(benchmark, enc, texts):
    out = benchmark(enc.encode_queries, texts.queries[:1])
    assert out.shape == (1, enc.dim)
