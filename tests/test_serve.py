"""bowrt.serve against a REAL server: uvicorn on a free 127.0.0.1 port, spoken to over HTTP.

Results equal the in-process Encoder; 64 concurrent clients; every error status:
401, 404, 413 (inputs, body, chunked body), 422, 429, 503, 504; metrics; graceful drain.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")

from bowrt import Encoder  # noqa: E402
from bowrt.bundle import TextRules  # noqa: E402
from bowrt.errors import InputError, InputTypeError, OptionError  # noqa: E402
from bowrt.serve import ServeConfig, create_app  # noqa: E402
from tests.tolerances import SAME_BUNDLE_ATOL

TIMEOUT = 30  # seconds, every HTTP call
QUERIES = ["who wrote hamlet?", "capital of france", "q", "ÉCOLE normale supérieure 🎓", "when did the wall fall " * 10]
PASSAGES = ["The Berlin Wall fell in 1989.", ["Hamlet", "Hamlet is a tragedy."], {"title": "Paris", "text": "Capital."},
            {"text": "no title"}, "word " * 400]


@pytest.fixture(scope="module")
def enc(tiny_bundles) -> Encoder:
    return Encoder(tiny_bundles["fp32"], threads=1)


class Running:
    """A uvicorn server in a thread, on a socket we bound ourselves (no port race)."""

    def __init__(self, app):
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)

    def __exit__(self, *exc) -> None:
        self.stop()

    def call(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None, chunked=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            if chunked is not None:
                conn.request(method, path, body=iter(chunked), headers=hdrs, encode_chunked=True)
            else:
                conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            ctype = resp.getheader("content-type", "")
            return resp.status, (json.loads(payload) if "json" in ctype else payload.decode()), dict(resp.getheaders())
        finally:
            conn.close()

    def post(self, path, body, **kw):
        status, payload, _ = self.call("POST", path, body, **kw)
        return status, payload


def served_name(enc) -> str:
    from pathlib import Path

    return Path(enc.manifest.source_model).name  # the tiny bundles' source is a local folder


@pytest.fixture(scope="module")
def srv(enc):
    with Running(create_app(enc)) as running:
        yield running


# --- results ---------------------------------------------------------------------
def test_embed_equals_in_process_encoder(srv, enc):
    status, vecs = srv.post("/embed", {"inputs": PASSAGES})
    assert status == 200
    np.testing.assert_allclose(np.array(vecs), enc.encode_passages(PASSAGES), atol=SAME_BUNDLE_ATOL)
    status, vecs = srv.post("/embed", {"inputs": QUERIES, "kind": "query"})
    assert status == 200
    np.testing.assert_allclose(np.array(vecs), enc.encode_queries(QUERIES), atol=SAME_BUNDLE_ATOL)
    status, vecs = srv.post("/embed", {"inputs": "one string", "kind": "passage"})
    assert status == 200 and np.array(vecs).shape == (1, enc.dim)
    status, vecs = srv.post("/embed", {"inputs": QUERIES[:2], "kind": "query", "normalize": True, "truncate": True})
    assert status == 200
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=SAME_BUNDLE_ATOL)
    np.testing.assert_allclose(np.array(vecs), enc.encode_queries(QUERIES[:2], normalize=True), atol=SAME_BUNDLE_ATOL)


def test_openai_route(srv, enc):
    status, out = srv.post("/v1/embeddings", {"input": QUERIES[:3], "model": served_name(enc)})
    assert status == 200
    assert out["object"] == "list" and out["model"] == served_name(enc)
    assert [d["index"] for d in out["data"]] == [0, 1, 2] and all(d["object"] == "embedding" for d in out["data"])
    got = np.array([d["embedding"] for d in out["data"]])
    np.testing.assert_allclose(got, enc.encode_passages(QUERIES[:3]), atol=SAME_BUNDLE_ATOL)  # default kind: passage
    n_tokens = sum(enc.tokenize_passages(QUERIES[:3]).lengths)
    assert out["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}

    for path, body in (("/v1/query/embeddings", {"input": QUERIES}), ("/v1/embeddings", {"input": QUERIES, "kind": "query"})):
        status, out = srv.post(path, body)
        assert status == 200
        np.testing.assert_allclose(np.array([d["embedding"] for d in out["data"]]), enc.encode_queries(QUERIES), atol=SAME_BUNDLE_ATOL)

    status, out = srv.post("/v1/passage/embeddings", {"input": "one", "encoding_format": "base64"})
    assert status == 200
    vec = np.frombuffer(base64.b64decode(out["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, enc.encode_passages(["one"])[0], atol=1e-6)


def test_64_concurrent_clients(srv, enc):
    texts = [f"question {i} about {QUERIES[i % len(QUERIES)]}" for i in range(64)]
    expected_q = enc.encode_queries(texts)
    expected_p = enc.encode_passages(texts)

    def client(i: int):
        items = [texts[i], texts[(i + 1) % 64]]
        if i % 2:
            status, out = srv.post("/embed", {"inputs": items, "kind": "query"})
            ref = expected_q[[i, (i + 1) % 64]]
        else:
            status, out = srv.post("/v1/embeddings", {"input": items})
            out = [d["embedding"] for d in out["data"]] if status == 200 else out
            ref = expected_p[[i, (i + 1) % 64]]
        return status, out, ref

    before = _batches(srv)
    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(client, range(64), timeout=2 * TIMEOUT))
    assert [r[0] for r in results] == [200] * 64
    for _, out, ref in results:
        np.testing.assert_allclose(np.array(out), ref, atol=SAME_BUNDLE_ATOL)
    assert _batches(srv) - before < 64  # concurrent requests shared batches


def _batches(srv) -> float:
    _, metrics, _ = srv.call("GET", "/metrics")
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("bowrt_batches_total"))


def test_health_and_info(srv, enc):
    status, body, _ = srv.call("GET", "/health")
    assert (status, body) == (200, {"status": "ok"})
    status, info, _ = srv.call("GET", "/info")
    assert status == 200
    assert info["model"] == served_name(enc) and info["variant"] == "fp32" and info["dim"] == enc.dim
    assert info["provider"] == "cpu" and info["max_input_length"] == {"query": 32, "passage": 256}
    assert info["limits"]["max_inputs"] == 256 and "api_key" not in info["limits"]
    # The host as the int8 kernels see it, and the bundle's self-check on it (issue 16).
    assert info["host"]["int8_isa"] == enc.info["host"]["int8_isa"] and info["host"]["int8_accumulation"]
    assert info["numerics"]["checked"] and info["numerics"]["min_cosine_vs_pytorch"] >= info["numerics"]["gate"]


# --- errors ------------------------------------------------------------------------
@pytest.mark.parametrize("body, fragment", [
    ({"inputs": 3}, "'inputs' must be a string or a list"),
    ({"inputs": []}, "'inputs' is empty"),
    ({}, "missing field 'inputs'"),
    ([1, 2], "JSON object"),
    ({"inputs": ["a"], "extra": 1}, "unknown field(s) extra; valid: inputs, kind, prompt_name, normalize, truncate"),
    ({"inputs": ["a"], "kind": "doc"}, "'kind' must be one of query, passage"),
    ({"inputs": ["a"], "normalize": "yes"}, "'normalize' must be true or false"),
    ({"inputs": ["ok", 5]}, "passages[1]"),
    ({"inputs": ["ok", "fine", {"title": "t"}]}, "passages[2]"),
    ({"inputs": ["ok", ["a", "b", "c"]]}, "passages[1]"),
    ({"inputs": ["ok", None], "kind": "query"}, "queries[1]"),
])
def test_bad_requests_are_422_naming_the_problem(srv, body, fragment):
    status, out = srv.post("/embed", body)
    assert status == 422
    assert out["error_type"] == "validation" and fragment in out["error"]


def test_malformed_json_is_422(srv):
    status, out, _ = srv.call("POST", "/embed", raw=b'{"inputs": [')
    assert status == 422 and "not valid JSON" in out["error"]
    status, out, _ = srv.call("POST", "/v1/embeddings", raw=b"\xff\xfe")
    assert status == 422 and out["error"]["code"] == "validation"


@pytest.mark.parametrize("body, fragment", [
    ({"input": [[1, 2, 3]]}, "token arrays"),
    ({"input": ["a", 3]}, "input[1] must be a string"),
    ({"input": "a", "dimensions": 7}, "'dimensions'"),
    ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "a", "model": 3}, "'model' must be a string"),
    ({"inputs": "a"}, "unknown field(s) inputs"),
])
def test_openai_errors_use_openai_shape(srv, body, fragment):
    status, out = srv.post("/v1/embeddings", body)
    assert status == 422 and fragment in out["error"]["message"]
    assert out["error"]["code"] == "validation" and out["error"]["type"] == "invalid_request_error"


def test_kind_path_conflicts_and_unknown_paths(srv):
    status, out = srv.post("/v1/query/embeddings", {"input": "a", "kind": "passage"})
    assert status == 422 and "two kinds" in out["error"]["message"] and "by the path" in out["error"]["message"]
    status, out = srv.post("/v1/documents/embeddings", {"input": "a"})
    assert status == 404
    status, _, _ = srv.call("GET", "/embed")
    assert status == 405


def test_too_many_inputs_is_413(srv):
    status, out = srv.post("/embed", {"inputs": ["x"] * 257})
    assert status == 413 and "limit of 256" in out["error"] and out["error_type"] == "payload_too_large"
    status, out = srv.post("/v1/embeddings", {"input": ["x"] * 257})
    assert status == 413


# --- auth and body limits: a second server --------------------------------------------
@pytest.fixture(scope="module")
def locked(enc):
    cfg = ServeConfig(api_key="s3cret-key", max_inputs=4, max_body_bytes=4096)
    with Running(create_app(enc, cfg)) as running:
        yield running


def test_api_key(locked, enc):
    good = {"Authorization": "Bearer s3cret-key"}
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        status, out, hdrs = locked.call("POST", "/embed", {"inputs": ["a"]}, headers=headers)
        assert status == 401 and out == {"error": "unauthorized", "error_type": "unauthorized"}
        assert hdrs.get("www-authenticate") == "Bearer"
    for path in ("/info", "/metrics"):
        assert locked.call("GET", path)[0] == 401
        assert locked.call("GET", path, headers=good)[0] == 200
    assert locked.call("GET", "/health")[0] == 200  # open for load balancer probes
    status, vecs = locked.post("/embed", {"inputs": ["a"]}, headers=good)
    assert status == 200
    np.testing.assert_allclose(np.array(vecs), enc.encode_passages(["a"]), atol=SAME_BUNDLE_ATOL)


def test_body_limits_are_413(locked):
    good = {"Authorization": "Bearer s3cret-key"}
    status, out = locked.post("/embed", {"inputs": ["x" * 5000]}, headers=good)
    assert status == 413 and "4096 bytes" in out["error"]
    status, out, _ = locked.call("POST", "/embed", headers=good, chunked=[b'{"inputs": ["' + b"y" * 1000] * 5 + [b'"]}'])
    assert status == 413 and "4096 bytes" in out["error"]
    status, out = locked.post("/embed", {"inputs": ["x"] * 5}, headers=good)
    assert status == 413 and "limit of 4" in out["error"]


# --- overload and timeouts: a third server -------------------------------------------
def test_overloaded_is_429_and_late_is_504(enc):
    cfg = ServeConfig(max_queue=1, max_wait_ms=1500, request_timeout_s=0.6)
    with Running(create_app(enc, cfg)) as running:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(running.post, "/embed", {"inputs": ["lonely"]})
            time.sleep(0.2)  # the first request now waits in the batcher for company
            status, out, hdrs = running.call("POST", "/embed", {"inputs": ["second"]})
            assert status == 429 and out["error_type"] == "overloaded" and hdrs.get("retry-after") == "1"
            status, out = first.result(TIMEOUT)
        assert status == 504 and out["error_type"] == "timeout"  # its deadline passed before its batch started
        _, metrics, _ = running.call("GET", "/metrics")
        assert 'bowrt_rejected_total{kind="passage"} 1' in metrics
        assert 'bowrt_requests_total{route="/embed",status="429"} 1' in metrics
        assert 'bowrt_requests_total{route="/embed",status="504"} 1' in metrics
        deadline = time.monotonic() + 5  # the batcher drops it, unencoded, when its batch would have started
        while 'bowrt_dropped_total{kind="passage"} 1' not in metrics and time.monotonic() < deadline:
            time.sleep(0.1)
            _, metrics, _ = running.call("GET", "/metrics")
        assert 'bowrt_dropped_total{kind="passage"} 1' in metrics
        assert 'bowrt_batches_total{kind="passage"} 0' in metrics


class _SlowSession:
    """The Encoder's session, 0.4 s slower per batch."""

    def __init__(self, session):
        self.session = session

    def run(self, ids, mask):
        time.sleep(0.4)
        return self.session.run(ids, mask)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_a_started_request_is_answered_past_the_timeout(tiny_bundles):
    """The timeout bounds the wait for a request's first batch; a big request that started
    in time is not cut off mid-way (4 one-row batches of 0.4 s against a 0.5 s timeout)."""
    slow = Encoder(tiny_bundles["fp32"], threads=1)
    want = slow.encode_passages(["a", "b", "c", "d"])
    slow._session = _SlowSession(slow._session)
    cfg = ServeConfig(request_timeout_s=0.5, max_batch_size=1)
    with Running(create_app(slow, cfg)) as running:
        t0 = time.monotonic()
        status, vecs = running.post("/embed", {"inputs": ["a", "b", "c", "d"]})
        took = time.monotonic() - t0
    assert status == 200 and took > 1.5, (status, took)
    np.testing.assert_allclose(np.array(vecs), want, atol=SAME_BUNDLE_ATOL)


# --- lifecycle: not ready, closed, graceful drain -------------------------------------
def test_unavailable_is_503_and_shutdown_drains(enc):
    app = create_app(enc, ServeConfig(max_wait_ms=400))
    state = app.state.bowrt
    running = Running(app).__enter__()
    try:
        state.ready = False
        assert running.call("GET", "/health")[0] == 503
        status, out = running.post("/embed", {"inputs": ["a"]})
        assert status == 503 and out["error_type"] == "unavailable"
        state.ready = True
        state.batchers["query"].close()
        status, out = running.post("/v1/query/embeddings", {"input": "a"})
        assert status == 503 and out["error"]["code"] == "unavailable" and out["error"]["type"] == "server_error"

        # Shut down while a request waits in the batcher: it is still answered.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(running.post, "/embed", {"inputs": PASSAGES})
            time.sleep(0.15)
            running.server.should_exit = True
            status, vecs = pending.result(TIMEOUT)
        assert status == 200
        np.testing.assert_allclose(np.array(vecs), enc.encode_passages(PASSAGES), atol=SAME_BUNDLE_ATOL)
    finally:
        running.stop()
    assert not running.thread.is_alive() and not state.ready
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2).close()


def test_metrics_text_format(srv):
    srv.post("/embed", {"inputs": ["metrics please"]})
    status, text, hdrs = srv.call("GET", "/metrics")
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    lines = text.splitlines()
    assert any(line.startswith('bowrt_requests_total{route="/embed",status="200"}') for line in lines)
    assert any(line.startswith('bowrt_requests_total{route="/embed",status="422"}') for line in lines)
    assert any(line.startswith('bowrt_queue_size{kind="passage"}') for line in lines)
    for family in ("bowrt_batch_size", "bowrt_queue_seconds", "bowrt_tokenize_seconds", "bowrt_inference_seconds"):
        assert f"# TYPE {family} histogram" in lines
        inf = [line for line in lines if line.startswith(f'{family}_bucket{{kind="passage",le="+Inf"}}')]
        count = [line for line in lines if line.startswith(f'{family}_count{{kind="passage"}}')]
        assert inf and count and float(inf[0].split()[-1]) == float(count[0].split()[-1]) > 0
    for line in lines:  # every sample line is "name{labels} number"
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_binds_loopback_by_default():
    import inspect

    from bowrt.serve.app import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"



# --- TEI's fields (issue 18) ------------------------------------------------------------
LONG = "alpha beta gamma " * 200  # far over the passage limit of 256 tokens


def test_tei_root_prompt_name_and_normalize(srv, enc):
    status, root = srv.post("/", {"inputs": PASSAGES})
    assert status == 200
    np.testing.assert_allclose(np.array(root), enc.encode_passages(PASSAGES), atol=SAME_BUNDLE_ATOL)
    for prompt, expected in (("query", enc.encode_queries(QUERIES)), ("document", enc.encode_passages(QUERIES)),
                             ("passage", enc.encode_passages(QUERIES))):
        status, vecs = srv.post("/", {"inputs": QUERIES, "prompt_name": prompt})
        assert status == 200
        np.testing.assert_allclose(np.array(vecs), expected, atol=SAME_BUNDLE_ATOL)
    status, vecs = srv.post("/", {"inputs": QUERIES, "prompt_name": "query", "kind": "query", "normalize": True,
                                  "dimensions": enc.dim})
    assert status == 200
    np.testing.assert_allclose(np.array(vecs), enc.encode_queries(QUERIES, normalize=True), atol=SAME_BUNDLE_ATOL)


@pytest.mark.parametrize("body, fragment", [
    ({"inputs": "a", "prompt_name": "search_query"}, "'prompt_name' must be one of query, passage, document"),
    ({"inputs": "a", "prompt_name": "query", "kind": "passage"}, "two kinds"),
    ({"inputs": "a", "truncation_direction": "middle"}, "'truncation_direction' must be right or left"),
    ({"inputs": "a", "truncate": "no"}, "'truncate' must be true or false"),
    ({"inputs": "a", "dimensions": 3}, "'dimensions'"),
    ({"inputs": ["short", LONG], "truncate": False}, "passages[1] has "),
])
def test_tei_field_errors_are_422(srv, body, fragment):
    status, out = srv.post("/", body)
    assert status == 422 and fragment in out["error"], out


def test_truncate_false_names_the_item_and_its_tokens(srv, enc):
    n = len(_plain(enc, "passage").encode(LONG).ids)
    assert n > 256
    status, out = srv.post("/embed", {"inputs": ["ok", LONG], "truncate": False})
    assert status == 422 and f"passages[1] has {n} tokens, more than the passage limit of 256" in out["error"]
    status, vecs = srv.post("/embed", {"inputs": PASSAGES[:4], "truncate": False})  # short: as with truncation
    assert status == 200
    np.testing.assert_allclose(np.array(vecs), enc.encode_passages(PASSAGES[:4]), atol=SAME_BUNDLE_ATOL)


def test_left_truncation_keeps_the_end(srv, enc):
    text = "start " * 300 + "the very end of it"
    left = enc.tokenize("passage", [text], truncation_direction="left")
    right = enc.tokenize("passage", [text])
    assert left.lengths == right.lengths == [256] and left.ids != right.ids
    assert enc._tokenizers["passage"]._tok.decode(left.ids[0]).endswith("the very end of it")
    for direction in ("left", "Left"):
        status, vecs = srv.post("/embed", {"inputs": [text], "truncation_direction": direction})
        assert status == 200
        np.testing.assert_allclose(np.array(vecs), enc.encode_tokens(left), atol=SAME_BUNDLE_ATOL)


# --- the runtime options behind them ----------------------------------------------------
def _plain(enc, kind, direction=None):
    """The bundle's tokenizer with no character cap: the reference for the capped path."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(enc.bundle_dir / "tokenizer.json"))
    tok.no_padding()
    if direction is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(enc._tokenizers[kind].max_length, direction=direction)
    return tok


@pytest.mark.parametrize("text", [
    "word " * 8000,  # natural text far over the character cap: the cut is exact
    "x" * 30000 + " tail words here",  # endless word, then words: the fallback prefix
    " " * 20000 + "lead " * 3000,  # a run of spaces, then words
    ("ab " * 10 + " " * 300) * 200,  # sparse words: more characters than tokens
])
def test_left_truncation_is_exact_under_the_character_cap(enc, text):
    cap = enc._tokenizers["passage"].char_cap
    assert cap is not None and len(text) > cap
    want = _plain(enc, "passage", "left").encode(text).ids
    assert list(enc.tokenize("passage", [text], truncation_direction="left").ids[0]) == want
    full = _plain(enc, "passage").encode(text).ids
    if len(full) <= 256:  # an endless word is one [UNK]: few tokens, all kept
        assert list(enc.tokenize("passage", [text], truncate=False).ids[0]) == full == want
        return
    with pytest.raises(InputError, match=f"passages\\[0\\] has {len(full)} tokens"):
        enc.tokenize("passage", [text], truncate=False)


def test_token_rows_and_ids_are_checked(enc):
    rows = enc.tokenize("query", QUERIES).rows()
    with enc.batcher("query") as b:
        np.testing.assert_allclose(b.encode(rows), enc.encode_queries(QUERIES), atol=SAME_BUNDLE_ATOL)
        with pytest.raises(InputTypeError, match="rows\\[0\\] is not a passage TokenRow"):
            enc.batcher("passage").encode(rows)
        with pytest.raises(InputTypeError, match="rows\\[1\\] is not a query TokenRow"):
            b.encode([*rows[:1], "text"])  # rows and text mixed: refused
        with pytest.raises(InputTypeError, match="queries\\[1\\]"):
            b.encode(["text", *rows[:1]])
    bare = _plain(enc, "query").encode("who wrote hamlet?", add_special_tokens=False).ids
    np.testing.assert_allclose(enc.encode_tokens(enc.tokenize_ids("query", [bare])),
                               enc.encode_queries(["who wrote hamlet?"]), atol=SAME_BUNDLE_ATOL)
    assert enc.tokenize_ids("query", [bare * 50]).lengths == [32]  # truncated as text is
    vocab = enc._tokenizers["query"].vocab_size
    for bad in ([[1, vocab]], [[1, -1]], [[True]], [[1.5]]):
        with pytest.raises(InputError, match="token_ids\\[0\\]\\[[01]\\]"):
            enc.tokenize_ids("query", bad)
    with pytest.raises(InputTypeError, match="token_ids\\[0\\] must be a non-empty list"):
        enc.tokenize_ids("query", [[]])
    with pytest.raises(InputError, match="prefix"):
        from bowrt.runtime.tokenize import tokenize_with

        tokenize_with(enc._tokenizers["query"], "query", ["a"], TextRules(query_prefix="query: "), direction="left")


# --- OpenAI: names, models, errors, token arrays -----------------------------------------
def test_models_and_model_name_suffixes(srv, enc):
    name = served_name(enc)
    status, out, _ = srv.call("GET", "/v1/models")
    assert status == 200 and out["object"] == "list"
    assert [m["id"] for m in out["data"]] == [name, f"{name}:query", f"{name}:passage"]
    assert all(m["object"] == "model" and m["owned_by"] == "bowrt" for m in out["data"])
    assert srv.call("GET", f"/v1/models/{name}:query")[0] == 200
    for model, expected in ((f"{name}:query", enc.encode_queries(QUERIES)), (f"{name}:passage", enc.encode_passages(QUERIES)),
                            (name, enc.encode_passages(QUERIES)), (None, enc.encode_passages(QUERIES))):
        status, out = srv.post("/v1/embeddings", {"input": QUERIES, **({"model": model} if model else {})})
        assert status == 200 and out["model"] == name
        np.testing.assert_allclose(np.array([d["embedding"] for d in out["data"]]), expected, atol=SAME_BUNDLE_ATOL)
    status, out = srv.post("/v1/query/embeddings", {"input": "a", "model": f"{name}:query"})
    assert status == 200
    status, out = srv.post("/v1/passage/embeddings", {"input": "a", "model": f"{name}:query"})
    assert status == 422 and "two kinds" in out["error"]["message"]
    for model in ("text-embedding-3-small", f"{name}:qurey", "/" + name):
        status, out = srv.post("/v1/embeddings", {"input": "a", "model": model})
        assert status == 404 and out["error"] == {
            "message": out["error"]["message"], "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
        assert f"{name}:query" in out["error"]["message"]
    status, out, _ = srv.call("GET", "/v1/models/gpt-4")
    assert status == 404 and out["error"]["code"] == "model_not_found"


def test_served_model_name_never_a_path(enc, tmp_path):
    from bowrt.serve.app import default_model_name

    assert default_model_name("bowdpr/bowdpr_wiki_triviaft") == "bowdpr/bowdpr_wiki_triviaft"
    assert default_model_name("/home/me/models/minilm/") == "minilm"
    (tmp_path / "local-model").mkdir()
    assert default_model_name(str(tmp_path / "local-model")) == "local-model"
    assert "/" not in served_name(enc) and served_name(enc) != enc.manifest.source_model
    for bad in ("", " x", "name:query", 3):
        with pytest.raises(OptionError, match="served_model_name"):
            ServeConfig(served_model_name=bad)
    with Running(create_app(enc, ServeConfig(served_model_name="bowdpr"))) as running:
        status, out = running.post("/v1/embeddings", {"input": "a", "model": "bowdpr:query"})
        assert status == 200 and out["model"] == "bowdpr"
        assert running.call("GET", "/info")[1]["model"] == "bowdpr"


def test_token_arrays_refused_by_default(srv):
    for given in ([[101, 2023]], [2023, 2003]):
        status, out = srv.post("/v1/embeddings", {"input": given})
        assert status == 422 and out["error"]["param"] == "input"
        assert "check_embedding_ctx_length=False" in out["error"]["message"] and "--accept-token-ids" in out["error"]["message"]


def test_token_arrays_when_accepted(enc):
    bare = _plain(enc, "query").encode("who wrote hamlet?", add_special_tokens=False).ids
    with Running(create_app(enc, ServeConfig(accept_token_ids=True))) as running:
        for given in ([bare], bare):
            status, out = running.post("/v1/query/embeddings", {"input": given})
            assert status == 200 and out["usage"]["prompt_tokens"] == len(bare) + 2
            np.testing.assert_allclose(out["data"][0]["embedding"], enc.encode_queries(["who wrote hamlet?"])[0],
                                       atol=SAME_BUNDLE_ATOL)
        status, out = running.post("/v1/embeddings", {"input": [bare, [1, 100257]]})  # a tiktoken-sized id
        assert status == 422 and "token_ids[1][1] = 100257 is not a token id of this model's vocabulary" in out["error"]["message"]


def test_openai_shape_on_every_v1_error(locked, enc):
    status, out, hdrs = locked.call("POST", "/v1/embeddings", {"input": "a"})
    assert status == 401 and hdrs.get("www-authenticate") == "Bearer"
    assert out["error"]["code"] == "invalid_api_key" and out["error"]["type"] == "invalid_request_error"
    good = {"Authorization": "Bearer s3cret-key"}
    status, out, _ = locked.call("POST", "/v1/embeddings", {"input": ["x"] * 5}, headers=good)
    assert status == 413 and out["error"]["code"] == "payload_too_large" and "limit of 4" in out["error"]["message"]
    status, out, _ = locked.call("GET", "/v1/nothing", headers=good)
    assert status == 404 and out["error"]["code"] == "not_found"
    status, out, _ = locked.call("GET", "/v1/embeddings", headers=good)
    assert status == 405 and out["error"]["code"] == "method_not_allowed"
    cfg = ServeConfig(max_queue=1, max_wait_ms=1500, request_timeout_s=5)
    with Running(create_app(enc, cfg)) as running, ThreadPoolExecutor(1) as pool:
        first = pool.submit(running.post, "/v1/embeddings", {"input": ["lonely"]})
        time.sleep(0.2)
        status, out, hdrs = running.call("POST", "/v1/embeddings", {"input": ["second"]})
        assert status == 429 and out["error"]["code"] == "rate_limit_exceeded" and hdrs.get("retry-after") == "1"
        assert first.result(TIMEOUT)[0] == 200


def test_cli_flags_reach_the_config(tiny_bundles, monkeypatch):
    from bowrt import cli
    from bowrt.serve import app as serve_app

    seen = {}
    monkeypatch.setattr(serve_app, "serve", lambda encoder, config, **kw: seen.update(config=config))
    assert cli.main(["serve", str(tiny_bundles["fp32"]), "--served-model-name", "bowdpr", "--accept-token-ids"]) == 0
    assert seen["config"].served_model_name == "bowdpr" and seen["config"].accept_token_ids is True
    assert cli.main(["serve", str(tiny_bundles["fp32"])]) == 0
    assert seen["config"].served_model_name is None and seen["config"].accept_token_ids is False
