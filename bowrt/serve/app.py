"""The HTTP server: FastAPI routes in front of the Encoder's dynamic batcher, one per kind.

Routes (all JSON; see docs/serving.md for examples):

- ``POST /embed`` and ``POST /``: TEI's embed (``tei.py``): ``inputs``, ``truncate``,
  ``truncation_direction``, ``prompt_name``, ``normalize``, ``dimensions``, bowrt's ``kind``;
- ``POST /v1/embeddings``, ``/v1/query/embeddings``, ``/v1/passage/embeddings``,
  ``GET /v1/models``: OpenAI's (``openai_routes.py``), errors in OpenAI's shape;
- ``GET /health`` (never needs the API key), ``GET /info``, ``GET /metrics`` (Prometheus text).

A request is parsed and checked in the event loop, then tokenized in a worker thread, once,
by the Encoder (:meth:`Encoder.tokenize`, with the request's truncation options, or
:meth:`Encoder.tokenize_ids`) and submitted there, as token rows, to its kind's
:meth:`Encoder.batcher`; the batcher's single worker runs merged batches. This is the same
path as ``Encoder.batcher`` in an application, so the server returns the vectors the Encoder
returns. Metrics are in ``metrics.py``; errors map to statuses in ``parse.error``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("bowrt serve needs the serve extra: pip install 'bowrt[serve]'") from e

from bowrt import __version__
from bowrt.errors import OptionError, RequestTimeout
from bowrt.options import check_bool, check_int, check_number
from bowrt.runtime import Encoder
from bowrt.runtime.batcher import DEFAULT_MAX_WAIT_MS, DynamicBatcher
from bowrt.runtime.tokenize import KINDS
from bowrt.serve import openai_routes, parse, tei
from bowrt.serve.metrics import Metrics

log = logging.getLogger("bowrt.serve")
OPEN_PATHS = frozenset({"/health"})  # answered without the API key (load balancer probes)
ROUTES = ("/embed", "/", "/v1/embeddings", "/v1/query/embeddings", "/v1/passage/embeddings", "/v1/models", "/health",
          "/info", "/metrics")


@dataclass(frozen=True)
class ServeConfig:
    """Server limits and batching; every field is a ``bowrt serve`` flag of the same name."""

    max_inputs: int = 256  # texts per request; more -> 413
    max_body_bytes: int = 2 * 1024 * 1024  # request body; more -> 413
    # A request whose first batch has not started by then -> 504 (dropped unencoded); once
    # started it is answered. Measured on a 2-core host (benchmarks/studies/serve_defaults.py, the
    # documented example: 10 clients x 64 passages of 250 tokens, bert-base fp32): 30 s gave
    # 7 of 10 504s; the last request started at ~108 s and all answered by 120 s; 300 s
    # leaves 2.8x room.
    request_timeout_s: float = 300.0
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS  # how long a batch waits for company (0: runs when the worker is free)
    max_batch_size: int = 64  # rows per merged batch
    max_batch_tokens: int | None = None  # padded tokens per batch; None: the Encoder's budget
    max_queue: int = 256  # pending requests per kind; more -> 429
    api_key: str | None = None  # when set, every route but /health needs "Authorization: Bearer <key>"
    served_model_name: str | None = None  # the OpenAI model name; None: the bundle's source model id (never a path)
    accept_token_ids: bool = False  # take OpenAI token arrays as ids of this model's vocabulary (see openai_routes)

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_body_bytes", "max_batch_size", "max_queue"):
            check_int(name, getattr(self, name))
        check_int("max_batch_tokens", self.max_batch_tokens, optional=True)
        for name in ("request_timeout_s", "max_wait_ms"):
            check_number(name, getattr(self, name))
        if self.api_key is not None and not (isinstance(self.api_key, str) and self.api_key):
            raise OptionError("api_key must be a non-empty str or None")
        name = self.served_model_name
        if name is not None and not (isinstance(name, str) and name.strip() == name and name
                                     and name.rpartition(":")[2] not in KINDS):
            raise OptionError(f"served_model_name must be a non-empty str without spaces around it or a "
                              f":query/:passage ending, got {name!r}")
        check_bool("accept_token_ids", self.accept_token_ids)


def default_model_name(source_model: str) -> str:
    """The bundle's source model id, or the last part of it where it is a filesystem path
    (absolute, or present on disk): a served name must not leak the export host's folders."""
    if os.path.isabs(source_model) or os.path.exists(source_model):
        return os.path.basename(os.path.normpath(source_model)) or "model"
    return source_model


class _Server:
    """Everything the routes share: config, encoder, batchers, metrics, readiness."""

    def __init__(self, bundle: Any, config: ServeConfig, providers: Any, threads: int | None):
        self.bundle, self.config, self.providers, self.threads = bundle, config, providers, threads
        self.encoder: Encoder | None = bundle if isinstance(bundle, Encoder) else None
        self.batchers: dict[str, DynamicBatcher] = {}
        self.metrics = Metrics()
        self.ready = False
        self.model_name = config.served_model_name
        self.created = int(time.time())

    def start(self) -> None:
        if self.encoder is None:
            self.encoder = Encoder(self.bundle, self.providers, self.threads)
        enc, cfg = self.encoder, self.config
        self.model_name = cfg.served_model_name or default_model_name(enc.manifest.source_model)
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

    async def embed(self, kind: str, items: list[Any], normalize: bool | None, *, truncate: bool = True,
                    direction: str = "right", token_ids: bool = False) -> tuple[np.ndarray, int]:
        """Vectors for ``items`` (texts, or token arrays with ``token_ids``) and their token count;
        raises typed errors."""
        if not self.ready:
            raise parse.NotReady("the server is not ready (loading or shutting down)")
        enc, batcher, timeout = self.encoder, self.batchers[kind], self.config.request_timeout_s

        def submit() -> Any:  # validation and tokenizing, once: in a worker thread, not in the event loop
            tokens = (enc.tokenize_ids(kind, items) if token_ids
                      else enc.tokenize(kind, items, truncate=truncate, truncation_direction=direction))
            return batcher.submit(tokens.rows(), timeout=timeout)

        t0 = asyncio.get_running_loop().time()
        future = await anyio.to_thread.run_sync(submit)
        self.metrics.tokenize.observe(kind, asyncio.get_running_loop().time() - t0)
        try:
            vecs = await batcher.result_async(future, timeout)
        except RequestTimeout:
            # The timeout bounds the wait for the request's first batch: still queued, it is
            # dropped unencoded (504). Once started, the work is paid for and the answer waited
            # for, as docs/serving.md says: a big request behind others is not cut off mid-way.
            if not (future.running() or (future.done() and not future.cancelled())):
                raise
            vecs = await batcher.result_async(future, None)
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
                body = (parse.openai_error("invalid or missing API key: send 'Authorization: Bearer <key>'", 401,
                                           "invalid_api_key") if path.startswith("/v1/")
                        else {"error": "unauthorized", "error_type": "unauthorized"})
                response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
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
    tei.routes(app, server)
    openai_routes.routes(app, server)
    _status_routes(app, server)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Unknown routes and methods: OpenAI's error shape under /v1, FastAPI's elsewhere.
        if request.url.path.startswith("/v1/"):
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
            return JSONResponse(parse.openai_error(str(exc.detail), exc.status_code, code), status_code=exc.status_code,
                                headers=exc.headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app


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
            "model": server.model_name, "revision": m.source_revision, "variant": m.variant, "dim": enc.dim,
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
