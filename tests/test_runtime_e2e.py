"""The runtime end to end on exported bundles: parity with PyTorch, batching
invariance, bad input, broken bundles, providers (GPU tests skip without CUDA).
"""

from __future__ import annotations

import json
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bowrt import Encoder
from bowrt.errors import (
    BundleChecksumError,
    BundleError,
    BundleFormatError,
    BundleMissingFileError,
    InputError,
    InputTypeError,
    ProviderUnavailableError,
)
from tests.reference import torch_reference
from tests.tolerances import FP16_MIN_COS, SAME_BUNDLE_ATOL, assert_fp32_parity

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_TRT = "TensorrtExecutionProvider" in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu with CUDAExecutionProvider")

QUERIES = [
    "who wrote hamlet?",
    "what is the capital of france",
    "",
    "when did the berlin wall fall and why did it matter so much to the people living on both sides of it",
    "ÉCOLE normale supérieure 🎓",
    "q",
]
PASSAGES = [
    ("Hamlet", "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601."),
    "Paris is the capital and most populous city of France. " * 12,  # past 256 tokens: truncated
    {"title": "Berlin Wall", "text": "The Berlin Wall was a guarded concrete barrier that encircled West Berlin."},
    ("", "untitled passage text"),
    "short",
]


def _formatted(passages):
    out = []
    for p in passages:
        title, text = (None, p) if isinstance(p, str) else (p.get("title"), p["text"]) if isinstance(p, dict) else p
        out.append(f"{title} {text}" if title else text)
    return out


def _assert_parity(got: np.ndarray, ref: np.ndarray):
    assert got.dtype == np.float32
    assert_fp32_parity(got, ref)


@pytest.fixture(scope="module")
def tiny(tiny_bundles) -> Encoder:
    return Encoder(tiny_bundles["fp32"], "cpu")


# --- parity with PyTorch ----------------------------------------------------------
def test_tiny_fp32_matches_pytorch(tiny, tiny_model_dir):
    rules = tiny.manifest.text
    _assert_parity(tiny.encode_queries(QUERIES), torch_reference(tiny_model_dir, QUERIES, rules.query_max_length, "cls"))
    _assert_parity(
        tiny.encode_passages(PASSAGES),
        torch_reference(tiny_model_dir, _formatted(PASSAGES), rules.passage_max_length, "cls"),
    )


@pytest.fixture(scope="module")
def minilm_fp32(minilm_bundles) -> Path:
    return minilm_bundles["fp32"]


def test_minilm_fp32_matches_pytorch(minilm_fp32, minilm_dir):
    enc = Encoder(minilm_fp32, "cpu")
    rules = enc.manifest.text
    pooling = enc.manifest.pooling
    # The reference is the raw pooled vector; MiniLM's manifest asks for
    # normalized output by default (its sentence-transformers Normalize module).
    _assert_parity(
        enc.encode_queries(QUERIES, normalize=False),
        torch_reference(minilm_dir, QUERIES, rules.query_max_length, pooling),
    )
    _assert_parity(
        enc.encode_passages(PASSAGES, normalize=False),
        torch_reference(minilm_dir, _formatted(PASSAGES), rules.passage_max_length, pooling),
    )
    unit = enc.encode_queries(QUERIES)
    assert enc.manifest.normalize == np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_every_variant_runs(tiny_bundles, tiny):
    ref = tiny.encode_passages(PASSAGES)
    for variant, path in tiny_bundles.items():
        enc = Encoder(path, "cpu")
        assert enc.variant == variant and enc.dim == tiny.dim
        got = enc.encode_passages(PASSAGES)
        assert np.isfinite(got).all()
        cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        assert cos.min() > 0.9, (variant, cos)


# --- batching does not change a vector ----------------------------------------------
def test_alone_equals_inside_batches(tiny_bundles):
    rng = random.Random(0)
    words = "the of a wall city tragedy written capital berlin paris 1601 shakespeare".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 10, 40, 120, 300]))) for _ in range(64)]
    # A small budget: many batches of different padded widths.
    enc = Encoder(tiny_bundles["fp32"], "cpu", max_batch_tokens=512, max_batch_size=16)
    alone = np.concatenate([enc.encode_passages([t]) for t in texts])
    scale = max(1.0, float(np.abs(alone).max()))
    for size in range(1, 65):
        idx = rng.sample(range(64), size)
        got = enc.encode_passages([texts[i] for i in idx])
        assert np.abs(got - alone[idx]).max() <= SAME_BUNDLE_ATOL * scale, size


def test_concurrent_callers_get_their_own_rows(tiny):
    expected = tiny.encode_queries(QUERIES)
    errors = []

    def worker(k):
        order = QUERIES[k:] + QUERIES[:k]
        for _ in range(5):
            got = tiny.encode_queries(order)
            if not np.allclose(got, np.roll(expected, -k, axis=0), atol=1e-5):
                errors.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --- bad input: typed, indexed, nothing computed -----------------------------------------
class _Spy:
    def __init__(self, session):
        self.session, self.calls = session, 0

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, *a):
        self.calls += 1
        return self.session.run(*a)


@pytest.mark.parametrize(
    "method, items, err, needle",
    [
        ("encode_queries", ["ok", None], InputTypeError, "queries[1] is None"),
        ("encode_queries", ["ok", "ok", b"bytes"], InputTypeError, "queries[2] is bytes"),
        ("encode_queries", [7], InputTypeError, "queries[0] is int"),
        ("encode_queries", "a bare string", InputTypeError, "bare str"),
        ("encode_passages", "a bare string", InputTypeError, "bare str"),
        ("encode_passages", ["ok", ("t", "x", "extra")], InputError, "passages[1]"),
        ("encode_passages", ["ok", "ok", {"title": "no text"}], InputError, "passages[2]"),
        ("encode_passages", [("title", None)], InputTypeError, "passages[0]"),
        ("encode_passages", [3.5], InputTypeError, "passages[0] is float"),
    ],
)
def test_bad_input(tiny, method, items, err, needle):
    spy = _Spy(tiny._session)
    tiny._session = spy
    try:
        with pytest.raises(err) as e:
            getattr(tiny, method)(items)
    finally:
        tiny._session = spy.session
    assert needle in str(e.value)
    assert spy.calls == 0  # nothing half-done


def test_empty_list(tiny):
    assert tiny.encode_queries([]).shape == (0, tiny.dim)
    assert tiny.encode_passages([]).dtype == np.float32
    assert tiny.encode_passages(()).shape == (0, tiny.dim)


def test_odd_strings_work(tiny):
    odd = [
        "", " ", "\n\t  \r", "x" * 2_000_000, "word " * 200_000,
        "emoji 🎉🇫🇷👩‍👩‍👧", "e\u0301\u0301 combining", "שלום עולם RTL مرحبا", "\x00\x07\x1b control",
        "\u200b\u200e\u202e\ufeff zero width", "lone \ud800 surrogate", "中文文本" * 1000,
    ]
    q = tiny.encode_queries(odd)
    p = tiny.encode_passages([("\x00", t) for t in odd])
    assert q.shape == p.shape == (len(odd), tiny.dim)
    assert np.isfinite(q).all() and np.isfinite(p).all()
    assert max(tiny.tokenize_passages(odd).lengths) == tiny.manifest.text.passage_max_length


def test_normalize(tiny):
    raw = tiny.encode_queries(QUERIES)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # bowdpr: raw vectors by default
    unit = tiny.encode_queries(QUERIES, normalize=True)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6, atol=1e-7)


def test_timings_and_tokens_path(tiny):
    tokens = tiny.tokenize_passages(PASSAGES)
    direct = tiny.encode_passages(PASSAGES)
    np.testing.assert_array_equal(tiny.encode_tokens(tokens), direct)
    timed = tiny.run_tokens(tokens)
    np.testing.assert_array_equal(timed.vectors, direct)
    t = timed.timings
    assert t.rows == len(PASSAGES) and t.tokens == sum(tokens.lengths) and t.inference_s > 0
    assert [tiny.token_count(p) for p in PASSAGES] == tokens.lengths


# --- broken bundles -------------------------------------------------------------------
def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return dst


def test_missing_bundle(tmp_path):
    with pytest.raises(BundleMissingFileError):
        Encoder(tmp_path / "nothing-here")


@pytest.mark.parametrize("victim", ["tokenizer.json", "model.onnx", "manifest.json"])
def test_missing_file(tiny_bundles, tmp_path, victim):
    b = _copy(tiny_bundles["fp32"], tmp_path)
    (b / victim).unlink()
    with pytest.raises(BundleMissingFileError):
        Encoder(b)


@pytest.mark.parametrize("victim", ["tokenizer.json", "model.onnx"])
def test_tampered_file(tiny_bundles, tmp_path, victim):
    b = _copy(tiny_bundles["fp32"], tmp_path)
    data = bytearray((b / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    (b / victim).write_bytes(bytes(data))
    with pytest.raises(BundleChecksumError):
        Encoder(b)


def test_unknown_format_version(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles["fp32"], tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    m["format_version"] = 99
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleFormatError, match="version 99"):
        Encoder(b)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError):
        Encoder(b)


# --- providers --------------------------------------------------------------------------
@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
def test_cuda_asked_but_unavailable(tiny_bundles):
    with pytest.raises(ProviderUnavailableError, match="CPUExecutionProvider"):
        Encoder(tiny_bundles["fp32"], "cuda")


def test_default_provider(tiny_bundles):
    """No providers given: CUDA when this onnxruntime has it, else CPU, and ORT really runs it."""
    enc = Encoder(tiny_bundles["fp32"])
    want = ("cuda", "CUDAExecutionProvider") if HAS_CUDA else ("cpu", "CPUExecutionProvider")
    assert (enc.provider, enc.providers[0]) == want


@pytest.mark.gpu
@needs_cuda
def test_cuda_io_binding_matches_cpu(tiny_bundles, tiny):
    enc = Encoder(tiny_bundles["fp32"], "cuda")
    assert enc.provider == "cuda" and enc._session._device == "cuda"  # the IO-binding path
    ref = tiny.encode_passages(PASSAGES)
    for size in (1, 3, len(PASSAGES)):  # different batch shapes through the one output buffer
        got = enc.encode_passages(PASSAGES[:size])
        np.testing.assert_allclose(got, ref[:size], rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp16_close_to_fp32(tiny_bundles, tiny):
    got = Encoder(tiny_bundles["fp16"], "cuda").encode_queries(QUERIES)
    ref = tiny.encode_queries(QUERIES)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= FP16_MIN_COS


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs onnxruntime-gpu with TensorrtExecutionProvider")
def test_tensorrt_builds_and_caches(tiny_bundles, tiny, tmp_path):
    enc = Encoder(tiny_bundles["fp32"], "tensorrt", cache_dir=tmp_path / "trt", max_batch_size=16)
    assert enc.provider == "tensorrt"
    got = enc.encode_passages(PASSAGES)
    np.testing.assert_allclose(got, tiny.encode_passages(PASSAGES), rtol=1e-3, atol=1e-3)
    assert any((tmp_path / "trt").rglob("*")), "no engine or timing cache written"
