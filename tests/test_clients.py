"""bowrt serve against the real clients (issue 18): huggingface_hub's InferenceClient (TEI),
the official openai client, and LangChain's OpenAIEmbeddings, each over HTTP to a live server."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")

from bowrt import Encoder
from bowrt.serve import ServeConfig, create_app
from tests.test_serve import LONG, PASSAGES, QUERIES, Running, served_name
from tests.tolerances import SAME_BUNDLE_ATOL

KEY = "client-key"
TEXTS = [p if isinstance(p, str) else None for p in PASSAGES]
TEXTS = [t for t in TEXTS if t] + QUERIES[:2]


@pytest.fixture(scope="module")
def enc(tiny_bundles) -> Encoder:
    return Encoder(tiny_bundles["fp32"], threads=1)


@pytest.fixture(scope="module")
def live(enc):
    with Running(create_app(enc, ServeConfig(api_key=KEY, max_inputs=8))) as running:
        yield running


@pytest.fixture(scope="module")
def url(live) -> str:
    return f"http://127.0.0.1:{live.port}"


def test_huggingface_inference_client(url, enc, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    # conftest sets HF_HUB_OFFLINE (no hub downloads in tests); this client only talks to 127.0.0.1.
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(hub.constants, "is_offline_mode", lambda: False, raising=False)
    client = hub.InferenceClient(base_url=url, api_key=KEY)
    got = client.feature_extraction(TEXTS)  # posts to "/", the TEI route
    np.testing.assert_allclose(got, enc.encode_passages(TEXTS), atol=SAME_BUNDLE_ATOL)
    got = client.feature_extraction(QUERIES, prompt_name="query", normalize=True, truncate=True)
    np.testing.assert_allclose(got, enc.encode_queries(QUERIES, normalize=True), atol=SAME_BUNDLE_ATOL)
    text = "start " * 300 + "the very end"
    got = client.feature_extraction(text, truncation_direction="left")
    np.testing.assert_allclose(got, enc.encode_tokens(enc.tokenize("passage", [text], truncation_direction="left")),
                               atol=SAME_BUNDLE_ATOL)
    with pytest.raises(hub.errors.HfHubHTTPError) as info:
        client.feature_extraction(["fine", LONG], truncate=False)
    assert info.value.response.status_code == 422 and "passages[1] has" in info.value.response.json()["error"]
    with pytest.raises(hub.errors.HfHubHTTPError) as info:
        client.feature_extraction("a", prompt_name="instruction")
    assert info.value.response.status_code == 422 and "query, passage, document" in info.value.response.json()["error"]


def test_openai_client(url, enc):
    openai = pytest.importorskip("openai")
    name = served_name(enc)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == [name, f"{name}:query", f"{name}:passage"]
    for fmt in ({}, {"encoding_format": "float"}):  # by default the client asks for base64 and decodes it
        out = client.embeddings.create(model=name, input=TEXTS, **fmt)
        assert out.model == name and out.usage.prompt_tokens == sum(enc.tokenize_passages(TEXTS).lengths)
        np.testing.assert_allclose([d.embedding for d in out.data], enc.encode_passages(TEXTS), atol=SAME_BUNDLE_ATOL)
    out = client.embeddings.create(model=f"{name}:query", input=QUERIES)
    np.testing.assert_allclose([d.embedding for d in out.data], enc.encode_queries(QUERIES), atol=SAME_BUNDLE_ATOL)
    query_client = openai.OpenAI(base_url=f"{url}/v1/query", api_key=KEY, max_retries=0)
    out = query_client.embeddings.create(model=name, input=QUERIES)
    np.testing.assert_allclose([d.embedding for d in out.data], enc.encode_queries(QUERIES), atol=SAME_BUNDLE_ATOL)

    cases = [
        (openai.AuthenticationError, 401, "invalid_api_key",
         lambda: openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).embeddings.create(model=name, input="a")),
        (openai.NotFoundError, 404, "model_not_found", lambda: client.embeddings.create(model="text-embedding-3-small", input="a")),
        (openai.APIStatusError, 413, "payload_too_large", lambda: client.embeddings.create(model=name, input=["a"] * 9)),
        (openai.UnprocessableEntityError, 422, "validation", lambda: client.embeddings.create(model=name, input=[[1, 2]])),
    ]
    for error, status, code, call in cases:
        with pytest.raises(error) as info:
            call()
        assert info.value.status_code == status and info.value.code == code and isinstance(info.value.type, str)


def _fake_tiktoken(monkeypatch):
    """LangChain tokenizes with tiktoken's cl100k_base, which tiktoken downloads; here it is
    replaced by an encoding that gives ids of that size, so LangChain's own code decides what it sends."""
    tiktoken = pytest.importorskip("tiktoken")

    class Cl100k:
        def encode_ordinary(self, text: str) -> list[int]:
            return [100000 + len(w) for w in text.split()]  # cl100k ids run to 100k; BERT's vocabulary to 30k

    def unknown_model(name: str):
        raise KeyError(name)

    monkeypatch.setattr(tiktoken, "encoding_for_model", unknown_model)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: Cl100k())


def test_langchain_openai_embeddings(url, enc, monkeypatch):
    lc = pytest.importorskip("langchain_openai")
    openai = pytest.importorskip("openai")
    name = served_name(enc)
    common = {"base_url": f"{url}/v1", "api_key": KEY, "max_retries": 0}
    # Default settings: LangChain sends tiktoken token arrays, refused (never read as BERT ids).
    _fake_tiktoken(monkeypatch)
    with pytest.raises(openai.UnprocessableEntityError, match="check_embedding_ctx_length=False"):
        lc.OpenAIEmbeddings(model=name, **common).embed_documents(TEXTS)
    # The settings that work: text, one instance per kind (embed_query sends what embed_documents does).
    docs = lc.OpenAIEmbeddings(model=name, check_embedding_ctx_length=False, **common)
    queries = lc.OpenAIEmbeddings(model=f"{name}:query", check_embedding_ctx_length=False, **common)
    np.testing.assert_allclose(docs.embed_documents(TEXTS), enc.encode_passages(TEXTS), atol=SAME_BUNDLE_ATOL)
    np.testing.assert_allclose(docs.embed_query(QUERIES[0]), enc.encode_passages(QUERIES[:1])[0], atol=SAME_BUNDLE_ATOL)
    np.testing.assert_allclose(queries.embed_query(QUERIES[0]), enc.encode_queries(QUERIES[:1])[0], atol=SAME_BUNDLE_ATOL)
