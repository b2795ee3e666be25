"""The LangChain and LlamaIndex adapters, each against the in-process Encoder and against a real
``bowrt serve`` (uvicorn on a free port): queries get the query rules, documents the passage
rules, lists of floats out, the Encoder's vectors; the server's errors come back typed."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from bowrt import Encoder
from bowrt.errors import InputError, InputTypeError, OptionError
from tests.tolerances import SAME_BUNDLE_ATOL

QUERY = "who wrote hamlet? " * 8  # longer than the query max length: the rules must differ
DOCS = ["The Berlin Wall fell in 1989.", "Hamlet is a tragedy by Shakespeare.", "word " * 400, "short"]


def langchain(source, **options) -> dict:
    lc = pytest.importorskip("bowrt.integrations.langchain", reason="the langchain extra is not installed")
    e = lc.BowrtEmbeddings(source, **options)
    return {"query": e.embed_query, "docs": e.embed_documents, "aquery": e.aembed_query, "adocs": e.aembed_documents}


def llamaindex(source, **options) -> dict:
    li = pytest.importorskip("bowrt.integrations.llamaindex", reason="the llamaindex extra is not installed")
    e = li.BowrtEmbedding(source, **options)
    assert e.model_name and e.class_name() == "BowrtEmbedding"
    return {"query": e.get_query_embedding, "docs": e.get_text_embedding_batch, "aquery": e.aget_query_embedding,
            "adocs": e.aget_text_embedding_batch, "doc": e.get_text_embedding}


ADAPTERS = [langchain, llamaindex]


@pytest.fixture(scope="module")
def enc(tiny_bundles) -> Encoder:
    return Encoder(tiny_bundles["fp32"], threads=1)


@pytest.fixture(scope="module")
def url(enc):
    pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
    from bowrt.serve import create_app
    from tests.test_serve import Running

    with Running(create_app(enc)) as running:
        yield f"http://127.0.0.1:{running.port}"


def check(api: dict, enc: Encoder, atol: float, normalize: bool | None = None) -> None:
    want_q = enc.encode_queries([QUERY], normalize)[0]
    want_d = enc.encode_passages(DOCS, normalize)
    q = api["query"](QUERY)
    assert isinstance(q, list) and len(q) == enc.dim and all(isinstance(x, float) for x in q)
    docs = api["docs"](DOCS)
    assert isinstance(docs, list) and isinstance(docs[0], list) and all(isinstance(x, float) for x in docs[0])
    np.testing.assert_allclose(q, want_q, atol=atol)
    np.testing.assert_allclose(docs, want_d, atol=atol)
    assert not np.allclose(q, enc.encode_passages([QUERY], normalize)[0], atol=SAME_BUNDLE_ATOL)  # query rules
    np.testing.assert_allclose(asyncio.run(api["aquery"](QUERY)), want_q, atol=atol)
    np.testing.assert_allclose(asyncio.run(api["adocs"](DOCS)), want_d, atol=atol)
    if "doc" in api:
        np.testing.assert_allclose(api["doc"](DOCS[0]), want_d[0], atol=atol)
    assert api["docs"]([]) == []


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_in_process(adapter, enc, tiny_bundles):
    check(adapter(enc), enc, 0.0)  # the very Encoder: the very vectors
    check(adapter(str(tiny_bundles["fp32"]), threads=1), enc, SAME_BUNDLE_ATOL)  # a bundle folder, loaded here
    check(adapter(enc, normalize=True), enc, 0.0, normalize=True)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_against_the_server(adapter, enc, url):
    check(adapter(url, batch_size=3), enc, SAME_BUNDLE_ATOL)  # 4 docs: two requests
    check(adapter(url + "/", normalize=True), enc, SAME_BUNDLE_ATOL, normalize=True)
    api = adapter(url)
    bad = ["fine", {"title": "no text"}]
    with pytest.raises(InputError, match="HTTP 422.*no text|HTTP 422.*'text'"):  # the server's 422, typed
        api["docs"](bad)
    with pytest.raises(InputError):  # as the Encoder's own error
        enc.encode_passages(bad)
    for source in (api, adapter(enc)):  # a bare str: refused alike, never embedded character by character
        with pytest.raises(InputTypeError, match="must be a list"):
            source["docs"]("one text")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_sources_and_options(adapter, enc, tmp_path):
    from bowrt.errors import ServerError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerError, match="no usable answer"):
        adapter(f"http://127.0.0.1:{port}", timeout=5)
    for source, options, words in (
        (enc, {"threads": 1}, "need a bundle"),
        ("http://127.0.0.1:1", {"threads": 1}, "do not apply to a server URL"),
        (enc, {"api_key": "k"}, "server URL only"),
        (enc, {"normalize": "yes"}, "normalize"),
        (str(tmp_path), {"thread": 1}, "unknown option"),
        ("http://127.0.0.1:1", {"batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(OptionError, match=words):
            adapter(source, **options)
