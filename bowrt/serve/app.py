"""The HTTP server: FastAPI routes in front of one dynamic batcher per kind.

Routes (all JSON; see docs/serving.md for examples):

- ``POST /embed``: TEI style, ``{"inputs": str | [str | {"title","text"} | [title, text]],
  "kind": "query" | "passage" (default passage), "normalize": bool?}`` -> ``[[float, ...], ...]``;
- ``POST /v1/embeddings``: OpenAI style, ``{"input": str | [str], "model": str?,
  "encoding_format": "float" | "base64", "kind": "query" | "passage"}`` (default passage);
  ``POST /v1/query/embeddings`` and ``/v1/passage/embeddings`` fix the kind by path, so an
  OpenAI client picks it with its base URL (``.../v1/query``);
- ``GET /health`` (never needs the API key), ``GET /info``, ``GET /metrics`` (Prometheus text).

A request is parsed and checked in the event loop, validated and tokenized in a
worker thread (``Encoder.tokenize_*``), then its token rows go to the kind's
:class:`DynamicBatcher`, whose single worker runs merged batches through
``Encoder.encode_tokens``. A row's cost is its token count, the number
``Encoder.token_count`` gives, so each text is tokenized once, not twice.
Errors are typed (STYLE: TEI's error enum -> status): 401 bad key, 413 too
large, 422 invalid input, 429 overloaded, 503 not ready or closed, 504 timeout.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import math
import threading
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
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("bowrt serve needs the serve extra: pip install 'bowrt[serve]'") from e

from bowrt import __version__
from bowrt.errors import (
    BatcherClosed,
    BatchFailed,
    BowrtError,
    InputError,
    InputTypeError,
    OptionError,
    Overloaded,
    RequestTimeout,
    RequestTooLarge,
)
from bowrt.runtime import Encoder, Tokens
from bowrt.runtime.batcher import DEFAULT_MAX_WAIT_MS, DynamicBatcher

log = logging.getLogger("bowrt.serve")
KINDS = ("query", "passage")
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
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("request_timeout_s", "max_wait_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise OptionError(f"{name} must be a number >= 0, got {v!r}")
        if self.api_key is not None and not (isinstance(self.api_key, str) and self.api_key):
            raise OptionError("api_key must be a non-empty str or None")


class _Invalid(InputError):
    """A malformed body: not JSON, wrong field types, unknown fields (422)."""


class _NotReady(BowrtError):
    """The model is still loading or the server is shutting down (503)."""


# --- metrics (Prometheus text format, written by hand: no extra dependency) ----
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help, buckets
        self.series: dict[str, list[float]] = {}  # kind -> bucket counts..., sum, count
        self.lock = threading.Lock()

    def observe(self, kind: str, value: float) -> None:
        with self.lock:
            s = self.series.setdefault(kind, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    s[i] += 1
            s[-2] += value
            s[-1] += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self.lock:
            for kind, s in sorted(self.series.items()):
                for bound, n in zip(self.buckets, s):
                    out.append(f'{self.name}_bucket{{kind="{kind}",le="{bound:g}"}} {n:g}')
                out += [f'{self.name}_bucket{{kind="{kind}",le="+Inf"}} {s[-1]:g}',
                        f'{self.name}_sum{{kind="{kind}"}} {s[-2]:.6g}', f'{self.name}_count{{kind="{kind}"}} {s[-1]:g}']
        return out


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.tokenize = _Histogram("bowrt_tokenize_seconds", "Validation and tokenization time per request.", _TIME_BUCKETS)
        self.queue = _Histogram("bowrt_queue_seconds", "Time from enqueue to batch start per request.", _TIME_BUCKETS)
        self.inference = _Histogram("bowrt_inference_seconds", "Encoder time per merged batch.", _TIME_BUCKETS)
        self.batch_size = _Histogram("bowrt_batch_size", "Rows per merged batch.", _SIZE_BUCKETS)

    def count(self, route: str, status: int) -> None:
        with self.lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1

    def render(self, batchers: dict[str, DynamicBatcher]) -> str:
        out = ["# HELP bowrt_requests_total HTTP requests by route and status.", "# TYPE bowrt_requests_total counter"]
        with self.lock:
            out += [f'bowrt_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
        stats = {kind: b.stats() for kind, b in batchers.items()}
        for name, kind_, help, field in (
            ("bowrt_queue_size", "gauge", "Requests accepted and not yet answered.", "pending"),
            ("bowrt_batches_total", "counter", "Merged batches run.", "batches"),
            ("bowrt_inputs_total", "counter", "Texts encoded.", "items"),
            ("bowrt_rejected_total", "counter", "Requests refused because the queue was full (429).", "rejected"),
            ("bowrt_dropped_total", "counter", "Requests dropped unencoded (timed out or cancelled).", "dropped"),
        ):
            out += [f"# HELP {name} {help}", f"# TYPE {name} {kind_}"]
            out += [f'{name}{{kind="{k}"}} {getattr(s, field)}' for k, s in sorted(stats.items())]
        for h in (self.tokenize, self.queue, self.inference, self.batch_size):
            out += h.render()
        return "\n".join(out) + "\n"


# --- the pieces a request goes through -----------------------------------------
class _Ticket:
    __slots__ = ("submitted", "started")

    def __init__(self) -> None:
        self.submitted, self.started = time.perf_counter(), False


class _Row:
    """One text's token ids and its request's ticket (so the worker can time the queue)."""

    __slots__ = ("ids", "ticket")

    def __init__(self, ids: list[int], ticket: _Ticket):
        self.ids, self.ticket = ids, ticket


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
            self.batchers[kind] = DynamicBatcher(
                self._encode_fn(kind), max_batch_size=cfg.max_batch_size,
                max_batch_tokens=cfg.max_batch_tokens or enc.max_batch_tokens, max_wait_ms=cfg.max_wait_ms,
                max_queue=cfg.max_queue, cost_fn=lambda row: len(row.ids), name=f"bowrt-serve-{kind}",
            )
        enc.encode_queries(["warm up"])  # the first run allocates; keep it out of the first request
        enc.encode_passages(["warm up"])
        self.ready = True
        log.info("ready: %r", enc)

    def stop(self) -> None:
        self.ready = False
        for b in self.batchers.values():
            b.close(drain=True, timeout=self.config.request_timeout_s)  # accepted requests are answered

    def _encode_fn(self, kind: str):
        enc, m = self.encoder, self.metrics

        def encode(rows: list[_Row]) -> np.ndarray:
            now = time.perf_counter()
            for row in rows:
                if not row.ticket.started:
                    row.ticket.started = True
                    m.queue.observe(kind, now - row.ticket.submitted)
            out = enc.encode_tokens(Tokens(kind, tuple(r.ids for r in rows)), normalize=False)
            m.inference.observe(kind, time.perf_counter() - now)
            m.batch_size.observe(kind, len(rows))
            return out

        return encode

    async def embed(self, kind: str, items: list[Any], normalize: bool | None) -> tuple[np.ndarray, int]:
        """Vectors for ``items`` and their token count; raises typed errors."""
        if not self.ready:
            raise _NotReady("the server is not ready (loading or shutting down)")
        enc = self.encoder
        t0 = time.perf_counter()
        tokenize = enc.tokenize_queries if kind == "query" else enc.tokenize_passages
        tokens = await anyio.to_thread.run_sync(tokenize, items)
        self.metrics.tokenize.observe(kind, time.perf_counter() - t0)
        ticket = _Ticket()
        vecs = await self.batchers[kind].aencode([_Row(ids, ticket) for ids in tokens.ids], self.config.request_timeout_s)
        if normalize is None:
            normalize = enc.manifest.normalize
        if normalize:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs, sum(tokens.lengths)


# --- request parsing -------------------------------------------------------------
async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    body, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
        body.append(chunk)
    try:
        return json.loads(b"".join(body))
    except (ValueError, UnicodeDecodeError) as e:
        raise _Invalid(f"request body is not valid JSON: {e}") from None


def _fields(body: Any, valid: tuple[str, ...], required: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Invalid(f"request body must be a JSON object with {required!r}, got {type(body).__name__}")
    unknown = sorted(set(body) - set(valid))
    if unknown:
        raise _Invalid(f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    if required not in body:
        raise _Invalid(f"missing field {required!r}")
    return body


def _inputs(value: Any, field: str, max_inputs: int) -> list[Any]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _Invalid(f"{field!r} must be a string or a list, got {type(value).__name__}")
    if not items:
        raise _Invalid(f"{field!r} is empty")
    if len(items) > max_inputs:
        raise RequestTooLarge(f"{len(items)} inputs exceed the limit of {max_inputs} per request; split the request")
    return items


def _kind(value: Any) -> str:
    if value not in KINDS:
        raise _Invalid(f"'kind' must be one of {', '.join(KINDS)}, got {value!r}")
    return value


def _optional(body: dict, name: str, types: tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
        raise _Invalid(f"{name!r} must be {what}, got {value!r:.60}")
    return value


def _error(exc: Exception, openai: bool) -> JSONResponse:
    """One typed error -> status (TEI's mapping), in TEI or OpenAI error shape."""
    headers = {}
    if isinstance(exc, RequestTooLarge):
        status, kind = 413, "payload_too_large"
    elif isinstance(exc, (InputError, InputTypeError, OptionError)):
        status, kind = 422, "validation"
    elif isinstance(exc, Overloaded):
        status, kind, headers = 429, "overloaded", {"Retry-After": "1"}
    elif isinstance(exc, (BatcherClosed, _NotReady)):
        status, kind = 503, "unavailable"
    elif isinstance(exc, RequestTimeout):
        status, kind = 504, "timeout"
    elif isinstance(exc, BatchFailed):
        status, kind = 500, "backend"
        log.error("batch failed: %s", exc, exc_info=exc.__cause__)
    else:
        log.exception("unexpected error", exc_info=exc)
        status, kind, exc = 500, "internal", RuntimeError("internal error")
    if isinstance(exc, (InputError, InputTypeError)) and not isinstance(exc, (_Invalid, RequestTooLarge)):
        exc = InputError(f"invalid input: {exc}")  # the item index is in the message (passages[3] ...)
    body = {"error": {"message": str(exc), "type": kind, "code": status}} if openai else {"error": str(exc), "error_type": kind}
    return JSONResponse(body, status_code=status, headers=headers)


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

    @app.post("/embed")
    async def embed(request: Request) -> Response:
        try:
            body = _fields(await _read_json(request, cfg.max_body_bytes), ("inputs", "kind", "normalize", "truncate"), "inputs")
            items = _inputs(body["inputs"], "inputs", cfg.max_inputs)
            normalize = _optional(body, "normalize", (bool,), "true or false")
            _optional(body, "truncate", (bool,), "true or false")  # accepted; inputs are always truncated
            vecs, _ = await server.embed(_kind(body.get("kind", "passage")), items, normalize)
        except Exception as exc:
            return _error(exc, openai=False)
        return Response(json.dumps(vecs.tolist()), media_type="application/json")

    async def openai_embeddings(request: Request, path_kind: str | None) -> Response:
        try:
            body = _fields(await _read_json(request, cfg.max_body_bytes),
                           ("input", "model", "encoding_format", "dimensions", "user", "kind"), "input")
            given = body["input"]
            if isinstance(given, list) and given and (all(isinstance(x, int) for x in given)
                                                      or any(isinstance(x, list) for x in given)):
                raise _Invalid("token arrays are not supported in 'input'; send text")
            items = _inputs(body["input"], "input", cfg.max_inputs)
            if not all(isinstance(x, str) for x in items):
                bad = next(i for i, x in enumerate(items) if not isinstance(x, str))
                raise _Invalid(f"input[{bad}] must be a string, got {type(items[bad]).__name__}")
            _optional(body, "model", (str,), "a string")
            _optional(body, "user", (str,), "a string")
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise _Invalid(f"'encoding_format' must be float or base64, got {fmt!r}")
            dims = _optional(body, "dimensions", (int,), "an int")
            if dims is not None and dims != server.encoder.dim:
                raise _Invalid(f"'dimensions' must be {server.encoder.dim} (this model's size) or absent, got {dims}")
            kind = _kind(body.get("kind", path_kind or "passage"))
            if path_kind is not None and kind != path_kind:
                raise _Invalid(f"'kind' {kind!r} contradicts the path /v1/{path_kind}/embeddings")
            vecs, n_tokens = await server.embed(kind, items, None)
        except Exception as exc:
            return _error(exc, openai=True)

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

    @app.get("/health")
    async def health() -> Response:
        ok = server.ready
        return JSONResponse({"status": "ok" if ok else "unavailable"}, status_code=200 if ok else 503)

    @app.get("/info")
    async def info() -> Response:
        if server.encoder is None:
            return _error(_NotReady("the model is still loading"), openai=False)
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

    return app


def serve(bundle: str | Path | Encoder, config: ServeConfig | None = None, *, host: str = "127.0.0.1", port: int = 8080,
          providers: Any = None, threads: int | None = None, log_level: str = "info") -> None:
    """Run the server until SIGINT/SIGTERM; on shutdown, accepted requests are answered before it exits."""
    import uvicorn

    cfg = config or ServeConfig()
    app = create_app(bundle, cfg, providers=providers, threads=threads)
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=int(cfg.request_timeout_s) + 5)
