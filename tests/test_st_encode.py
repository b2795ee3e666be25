"""Encoder.encode, sentence-transformers' call shape: the vectors of encode_passages /
encode_queries, one str -> one 1-D vector, batch_size bounds rows, a progress line, and
every argument it cannot honour refused with OptionError; dir(bowrt) and lazy imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bowrt import Encoder
from bowrt.errors import InputTypeError, OptionError
from tests.tolerances import SAME_BUNDLE_ATOL

QUERIES = ["who wrote hamlet?", "capital of france", "q", "when did the wall fall " * 10]
PASSAGES = ["The Berlin Wall fell in 1989.", ["Hamlet", "Hamlet is a tragedy."], {"title": "Paris", "text": "Capital."},
            "word " * 400, "short"]


@pytest.fixture(scope="module")
def enc(tiny_bundles) -> Encoder:
    return Encoder(tiny_bundles["fp32"], threads=1)


def test_same_vectors_as_encode_passages_and_queries(enc):
    # Default batch_size: the very batches encode_* plan, so the very same bits.
    assert np.array_equal(enc.encode(PASSAGES), enc.encode_passages(PASSAGES))
    assert np.array_equal(enc.encode_document(PASSAGES), enc.encode_passages(PASSAGES))
    assert np.array_equal(enc.encode(PASSAGES, prompt_name="document"), enc.encode_passages(PASSAGES))
    want_q = enc.encode_queries(QUERIES)
    for got in (enc.encode(QUERIES, "query"), enc.encode(QUERIES, prompt_name="query"), enc.encode_query(QUERIES),
                enc.encode(QUERIES, kind="query", prompt_name="query")):
        assert got.dtype == np.float32 and got.shape == (len(QUERIES), enc.dim)
        assert np.array_equal(got, want_q)
    # The query rules really differ from the passage rules here (max length).
    assert not np.allclose(enc.encode(QUERIES[-1:]), want_q[-1:], atol=SAME_BUNDLE_ATOL)


def test_single_str_gives_a_1d_vector(enc):
    one = enc.encode("The Berlin Wall fell in 1989.")
    assert one.shape == (enc.dim,)
    assert np.array_equal(one, enc.encode_passages(["The Berlin Wall fell in 1989."])[0])
    assert enc.encode_query("who wrote hamlet?").shape == (enc.dim,)
    assert enc.encode({"title": "Paris", "text": "Capital."}).shape == (enc.dim,)
    assert enc.encode([]).shape == (0, enc.dim)


def test_batch_size_bounds_rows_per_batch(enc, monkeypatch):
    rows = []
    real = enc._session.run

    def spy(ids, mask):
        rows.append(ids.shape[0])
        return real(ids, mask)

    monkeypatch.setattr(enc._session, "run", spy)
    got = enc.encode(QUERIES, kind="query", batch_size=1)
    assert rows == [1] * len(QUERIES)
    np.testing.assert_allclose(got, enc.encode_queries(QUERIES), atol=SAME_BUNDLE_ATOL)
    rows.clear()
    enc.encode(QUERIES[:3], kind="query", batch_size=2)
    assert rows == [2, 1]
    rows.clear()
    enc.encode(QUERIES[:3], kind="query", batch_size=10_000)  # more than max_batch_size: capped by it
    assert rows == [3]


def test_normalize_and_list_output(enc):
    unit = enc.encode(PASSAGES, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=SAME_BUNDLE_ATOL)
    assert np.array_equal(unit, enc.encode_passages(PASSAGES, normalize=True))
    assert np.array_equal(enc.encode(PASSAGES, normalize_embeddings=False), enc.encode_passages(PASSAGES))
    as_list = enc.encode(PASSAGES, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == len(PASSAGES) and as_list[0].shape == (enc.dim,)
    assert np.array_equal(np.stack(as_list), enc.encode_passages(PASSAGES))


def test_progress_line_on_stderr(enc, capsys):
    enc.encode(QUERIES, kind="query", batch_size=2, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "batch 2/2, 4/4 queries" in err and err.endswith("\n")
    enc.encode(QUERIES, kind="query", show_progress_bar=False)
    enc.encode(QUERIES, kind="query")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("options", "words"), [
    ({"batch_sz": 8}, ["unknown option(s) batch_sz", "batch_size", "normalize_embeddings", "convert_to_tensor"]),
    ({"convert_to_tensor": True}, ["convert_to_tensor", "torch.from_numpy"]),
    ({"prompt": "query: "}, ["prompt", "kind="]),
    ({"device": "cuda"}, ["device", "providers="]),
    ({"precision": "int8"}, ["precision"]),
    ({"output_value": "token_embeddings"}, ["output_value"]),
    ({"truncate_dim": 128}, ["truncate_dim"]),
    ({"convert_to_tensor": 0}, ["convert_to_tensor"]),
    ({"kind": "document"}, ["kind must be one of query, passage"]),
    ({"prompt_name": "title"}, ["prompt_name must be one of query, passage, document"]),
    ({"kind": "passage", "prompt_name": "query"}, ["contradicts"]),
    ({"batch_size": 0}, ["batch_size must be an int >= 1"]),
    ({"batch_size": 2.5}, ["batch_size"]),
    ({"show_progress_bar": "yes"}, ["show_progress_bar must be True or False"]),
    ({"convert_to_numpy": None}, ["convert_to_numpy"]),
    ({"normalize_embeddings": 1}, ["normalize"]),
])
def test_refused_options(enc, options, words):
    with pytest.raises(OptionError) as e:
        enc.encode(QUERIES, **options)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_accepted_at_st_defaults_and_bad_items(enc):
    # Code written for SentenceTransformer.encode that spells out the defaults still runs.
    got = enc.encode(PASSAGES, prompt=None, convert_to_tensor=False, device=None, precision="float32",
                     output_value="sentence_embedding", truncate_dim=None, pool=None, chunk_size=None)
    assert np.array_equal(got, enc.encode_passages(PASSAGES))
    with pytest.raises(OptionError, match="encodes queries"):
        enc.encode_query(QUERIES, kind="passage")
    with pytest.raises(InputTypeError):
        enc.encode(["fine", None])


LAZY = """
import sys, bowrt
assert 'Encoder' in dir(bowrt) and 'BowrtError' in dir(bowrt), dir(bowrt)
assert 'onnxruntime' not in sys.modules, 'import bowrt loaded onnxruntime'
import bowrt.runtime
from bowrt import Encoder
assert callable(Encoder.encode) and callable(Encoder.from_pretrained)
lazy = ('huggingface_hub', 'langchain_core', 'llama_index', 'sentence_transformers', 'torch')
print(','.join(m for m in lazy if m in sys.modules))
"""


def test_dir_and_lazy_imports():
    out = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=60, check=False)
    assert (out.returncode, out.stdout.strip()) == (0, ""), f"import bowrt.runtime pulled in {out.stdout} {out.stderr}"


def test_progress_runs_the_call_as_planned_once(enc, monkeypatch, capsys):
    """The progress line follows the run's own batches: one plan per call, not one per batch."""
    from bowrt.runtime import encoder as encoder_module

    plans, rows = [], []
    real_plan, real_run = encoder_module.plan_batches, enc._session.run

    def counting_plan(*args):
        plans.append(real_plan(*args))
        return plans[-1]

    def spy(ids, mask):
        rows.append(ids.shape[0])
        return real_run(ids, mask)

    monkeypatch.setattr(encoder_module, "plan_batches", counting_plan)
    monkeypatch.setattr(enc._session, "run", spy)
    got = enc.encode(QUERIES, kind="query", batch_size=3, show_progress_bar=True)
    assert len(plans) == 1 and [len(b) for b in plans[0]] == rows == [3, 1]
    np.testing.assert_allclose(got, enc.encode_queries(QUERIES), atol=SAME_BUNDLE_ATOL)
    err = capsys.readouterr().err
    assert "batch 1/2, 3/4 queries" in err and "batch 2/2, 4/4 queries" in err


def test_run_tokens_reports_each_batch_that_ran(enc):
    tokens = enc.tokenize_passages(PASSAGES)
    seen = []
    got = enc.run_tokens(tokens, max_batch_size=2, on_batch=lambda b, n, done: seen.append((b, n, done)))
    assert seen == [(1, 3, 2), (2, 3, 4), (3, 3, 5)] and got.timings.batches == 3
    np.testing.assert_allclose(got.vectors, enc.encode_passages(PASSAGES), atol=SAME_BUNDLE_ATOL)
    assert enc.run_tokens(tokens, max_batch_size=10_000).timings.batches == enc.run_tokens(tokens).timings.batches
