"""The HTTP server: FastAPI routes in front of the Encoder's dynamic batcher, one per kind.

Routes (all JSON; see docs/serving.md for examples):

- ``POST /embed``: TEI style, ``{"inputs": str | [str | {"title","text"} | [title, text]],
  "kind": "query" | "passage" (default passage), "normalize": bool?}`` -> ``[[float, ...], ...]``;
- ``POST /v1/embeddings``: OpenAI style, ``{"input": str | [str], "model": str?,
  "encoding_format": "float" | "base64", "kind": "query" | "passage"}`` (default passage);
  ``POST /v1/query/embeddings`` and ``/v1/passage/embeddings`` fix the kind by path, so an
  OpenAI client picks it with its base URL (``.../v1/query``);
- ``GET /health`` (never needs the API key), ``GET /info``, ``GET /metrics`` (Prometheus text).

A request is parsed and checked in the event loop (``parse.py``), then submitted in a
worker thread to its kind's :meth:`Encoder.batcher`, which validates and tokenizes it
there, once, and queues its token rows; the batcher's single worker runs merged batches.
This is the same path as ``Encoder.batcher`` in an application, so the server returns the
vectors the Encoder returns. Metrics are in ``metrics.py``; errors map to statuses in
``parse.error``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("bowrt serve needs the serve extra: pip install 'bowrt[serve]'") from e

from bowrt import __version__
from bowrt.errors import OptionError
from bowrt.options import check_int, check_number
from bowrt.runtime import Encoder
from bowrt.runtime.batcher import DEFAULT_MAX_WAIT_MS, DynamicBatcher
from bowrt.runtime.tokenize import KINDS
from bowrt.serve import parse
from bowrt.serve.metrics import Metrics

log = logging.getLogger("bowrt.serve")
OPEN_PATHS = frozenset({"/health"})  # answered without the API key (load balancer probes)
ROUTES = ("/embed", "/v1/embeddings", "/v1/query/embeddings", "/v1/passage/embeddings", "/health", "/info", "/metrics")


@dataclass(frozen=True)
class ServeConfig:
    """Server limits and batching; every field is a ``bowrt serve`` flag of the same name."""

    max_inputs: int = 256  # texts per request; more -> 413
    max_body_bytes: int = 2 * 1024 * 1024  # request body; more -> 413
    request_timeout_s: float = 30.0  # a request not started by then -> 504
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS  # how long a batch waits for company (0: runs when the worker is free)
    max_batch_size: int = 64  # rows per merged batch
    max_batch_tokens: int | None = None  # padded tokens per batch; None: the Encoder's budget
    max_queue: int = 256  # pending requests per kind; more -> 429
    api_key: str | None = None  # when set, every route but /health needs "Authorization: Bearer <key>"

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_body_bytes", "max_batch_size", "max_queue"):
            check_int(name, getattr(self, name))
        check_int("max_batch_tokens", self.max_batch_tokens, optional=True)
        for name in ("request_timeout_s", "max_wait_ms"):
            check_number(name, getattr(self, name))
        if self.api_key is not None and not (isinstance(self.api_key, str) and self.api_key):
            raise OptionError("api_key must be a non-empty str or None")


class _Server:
    """Everything the routes share: config, encoder, batchers, metrics, readiness."""

    def __init__(self, bundle: Any, config: ServeConfig, providers: Any, threads: int | None):
        self.bundle, self.config, self.providers, self.threads = bundle, config, providers, threads
        self.encoder: Encoder | None = bundle if isinstance(bundle, Encoder) else None
        self.batchers: dict[str, DynamicBatcher] = {}
        self.metrics = Metrics()
        self.ready = False

    def start(self) -> None:
        if self.encoder is None:
            self.encoder = Encoder(self.bundle, self.providers, self.threads)
        enc, cfg = self.encoder, self.config
        for kind in KINDS:
            # Unnormalized rows: a request may ask for normalize either way (TEI's field).
            self.batchers[kind] = enc.batcher(
                kind, normalize=False, max_batch_size=cfg.max_batch_size,
                max_batch_tokens=cfg.max_batch_tokens or enc.max_batch_tokens, max_wait_ms=cfg.max_wait_ms,
                max_queue=cfg.max_queue, on_batch=self.metrics.batch_observer(kind), name=f"bowrt-serve-{kind}",
            )
        enc.encode_queries(["warm up"])  # the first run allocates; keep it out of the first request
        enc.encode_passages(["warm up"])
        self.ready = True
        log.info("ready: %r", enc)

    def stop(self) -> None:
        self.ready = False
        for b in self.batchers.values():
            b.close(drain=True, timeout=self.config.request_timeout_s)  # accepted requests are answered

    async def embed(self, kind: str, items: list[Any], normalize: bool | None) -> tuple[np.ndarray, int]:
        """Vectors for ``items`` and their token count; raises typed errors."""
        if not self.ready:
            raise parse.NotReady("the server is not ready (loading or shutting down)")
        batcher, timeout = self.batchers[kind], self.config.request_timeout_s
        t0 = asyncio.get_running_loop().time()
        # Validation and tokenizing run in submit: in a worker thread, not in the event loop.
        future = await anyio.to_thread.run_sync(lambda: batcher.submit(items, timeout=timeout))
        self.metrics.tokenize.observe(kind, asyncio.get_running_loop().time() - t0)
        vecs = await batcher.result_async(future, timeout)
        if normalize is None:
            normalize = self.encoder.manifest.normalize
        if normalize:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs, future.cost


# --- the app ---------------------------------------------------------------------
class _Guard:
    """Pure ASGI middleware: API key check before anything is read, and request counting by route and status."""

    def __init__(self, app: Any, server: _Server):
        self.app, self.server = app, server
        key = server.config.api_key
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status = [500]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.expected is not None and path not in OPEN_PATHS and not self._authorized(scope):
                response = JSONResponse({"error": "unauthorized", "error_type": "unauthorized"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.server.metrics.count(path if path in ROUTES else "other", status[0])

    def _authorized(self, scope: dict) -> bool:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self.expected)


def create_app(bundle: str | Path | Encoder, config: ServeConfig | None = None, *, providers: Any = None,
               threads: int | None = None) -> FastAPI:
    """The ASGI app for ``bundle`` (a bundle folder, loaded at startup, or a loaded ``Encoder``)."""
    cfg = config or ServeConfig()
    if not isinstance(cfg, ServeConfig):
        raise OptionError(f"config must be a ServeConfig, got {type(cfg).__name__}")
    server = _Server(bundle, cfg, providers, threads)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await anyio.to_thread.run_sync(server.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(server.stop)

    app = FastAPI(title="bowrt", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.bowrt = server
    app.add_middleware(_Guard, server=server)
    _tei_routes(app, server)
    _openai_routes(app, server)
    _status_routes(app, server)
    return app


def _tei_routes(app: FastAPI, server: _Server) -> None:
    cfg = server.config

    @app.post("/embed")
    async def embed(request: Request) -> Response:
        try:
            body = parse.fields(await parse.read_json(request, cfg.max_body_bytes),
                                ("inputs", "kind", "normalize", "truncate"), "inputs")
            items = parse.inputs(body["inputs"], "inputs", cfg.max_inputs)
            normalize = parse.optional(body, "normalize", (bool,), "true or false")
            parse.optional(body, "truncate", (bool,), "true or false")  # accepted; inputs are always truncated
            vecs, _ = await server.embed(parse.kind(body.get("kind", "passage")), items, normalize)
        except Exception as exc:
            return parse.error(exc, openai=False)
        return Response(json.dumps(vecs.tolist()), media_type="application/json")


def _openai_request(body: Any, cfg: ServeConfig, dim: int, path_kind: str | None) -> tuple[str, list[str], str]:
    """Check an OpenAI embeddings body: ``(kind, texts, encoding_format)``."""
    body = parse.fields(body, ("input", "model", "encoding_format", "dimensions", "user", "kind"), "input")
    given = body["input"]
    if isinstance(given, list) and given and (all(isinstance(x, int) for x in given)
                                              or any(isinstance(x, list) for x in given)):
        raise parse.Invalid("token arrays are not supported in 'input'; send text")
    items = parse.inputs(given, "input", cfg.max_inputs)
    if not all(isinstance(x, str) for x in items):
        bad = next(i for i, x in enumerate(items) if not isinstance(x, str))
        raise parse.Invalid(f"input[{bad}] must be a string, got {type(items[bad]).__name__}")
    parse.optional(body, "model", (str,), "a string")
    parse.optional(body, "user", (str,), "a string")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise parse.Invalid(f"'encoding_format' must be float or base64, got {fmt!r}")
    dims = parse.optional(body, "dimensions", (int,), "an int")
    if dims is not None and dims != dim:
        raise parse.Invalid(f"'dimensions' must be {dim} (this model's size) or absent, got {dims}")
    kind = parse.kind(body.get("kind", path_kind or "passage"))
    if path_kind is not None and kind != path_kind:
        raise parse.Invalid(f"'kind' {kind!r} contradicts the path /v1/{path_kind}/embeddings")
    return kind, items, fmt


def _openai_routes(app: FastAPI, server: _Server) -> None:
    cfg = server.config

    async def openai_embeddings(request: Request, path_kind: str | None) -> Response:
        try:
            body = await parse.read_json(request, cfg.max_body_bytes)
            kind, items, fmt = _openai_request(body, cfg, server.encoder.dim, path_kind)
            vecs, n_tokens = await server.embed(kind, items, None)
        except Exception as exc:
            return parse.error(exc, openai=True)

        def encode(v: np.ndarray) -> Any:
            return base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()

        return JSONResponse({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vecs)],
            "model": server.encoder.manifest.source_model,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        })

    @app.post("/v1/embeddings")
    async def v1_embeddings(request: Request) -> Response:
        return await openai_embeddings(request, None)

    @app.post("/v1/{kind}/embeddings")
    async def v1_kind_embeddings(kind: str, request: Request) -> Response:
        if kind not in KINDS:
            message = f"no route /v1/{kind}/embeddings; use /v1/embeddings, /v1/query/embeddings or /v1/passage/embeddings"
            return JSONResponse({"error": {"message": message, "type": "not_found", "code": 404}}, status_code=404)
        return await openai_embeddings(request, kind)


def _status_routes(app: FastAPI, server: _Server) -> None:
    cfg = server.config

    @app.get("/health")
    async def health() -> Response:
        ok = server.ready
        return JSONResponse({"status": "ok" if ok else "unavailable"}, status_code=200 if ok else 503)

    @app.get("/info")
    async def info() -> Response:
        if server.encoder is None:
            return parse.error(parse.NotReady("the model is still loading"), openai=False)
        enc = server.encoder
        m = enc.manifest
        return JSONResponse({
            "model": m.source_model, "revision": m.source_revision, "variant": m.variant, "dim": enc.dim,
            "pooling": m.pooling, "normalize": m.normalize, "similarity": m.similarity,
            "provider": enc.provider, "providers": enc.providers,
            "max_input_length": {"query": m.text.query_max_length, "passage": m.text.passage_max_length},
            "limits": {k: v for k, v in asdict(cfg).items() if k != "api_key"},
            "encoder_max_batch_tokens": enc.max_batch_tokens, "ready": server.ready, "bowrt": __version__,
            "host": enc.info["host"], "exact_isas": enc.info["exact_isas"], "numerics": enc.numerics,
        })

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(server.batchers), media_type="text/plain; version=0.0.4; charset=utf-8")


def serve(bundle: str | Path | Encoder, config: ServeConfig | None = None, *, host: str = "127.0.0.1", port: int = 8080,
          providers: Any = None, threads: int | None = None, log_level: str = "info") -> None:
    """Run the server until SIGINT/SIGTERM; on shutdown, accepted requests are answered before it exits."""
    import uvicorn

    cfg = config or ServeConfig()
    app = create_app(bundle, cfg, providers=providers, threads=threads)
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=int(cfg.request_timeout_s) + 5)
