"""OpenAI's routes, as the official ``openai`` client and LangChain's ``OpenAIEmbeddings`` use them.

- ``POST /v1/embeddings``: ``{"input", "model", "encoding_format", "dimensions", "user"}`` (and
  bowrt's ``kind``); ``POST /v1/query/embeddings`` and ``/v1/passage/embeddings`` fix the kind
  by path (an OpenAI client picks it with its base URL, ``.../v1/query``).
- ``GET /v1/models`` and ``GET /v1/models/{id}``: the served name and its ``:query`` and
  ``:passage`` forms. ``model`` picks the kind for tools that only let you set a model name:
  ``<name>:query`` encodes queries, ``<name>`` and ``<name>:passage`` passages. A ``model``
  that is none of them is a 404 ``model_not_found`` (as OpenAI and vLLM answer), so a typo
  never falls back to passage rules; an absent ``model`` is the served one.
- Token arrays (``list[int]`` or ``list[list[int]]``) are refused unless the server was
  started with ``accept_token_ids``: they would have to be ids of THIS model's vocabulary,
  and LangChain's default (``check_embedding_ctx_length=True``) sends tiktoken ids, which
  mostly fall inside a BERT vocabulary and would give wrong vectors silently.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bowrt.runtime.tokenize import KINDS
from bowrt.serve import parse

FIELDS = ("input", "model", "encoding_format", "dimensions", "user", "kind")
TOKEN_IDS_REFUSED = (
    "token arrays in 'input' are refused: they would be read as ids of this model's own vocabulary, and "
    "clients such as LangChain's OpenAIEmbeddings send tiktoken ids by default (wrong vectors, silently); "
    "send text (LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False)), or start the server "
    "with --accept-token-ids if your client sends this model's token ids"
)


def model_ids(name: str) -> list[str]:
    return [name, *(f"{name}:{k}" for k in KINDS)]


def _model_kind(model: Any, name: str) -> str | None:
    """The kind a ``model`` names (None: the plain name, or no model); 404 if it is not served."""
    if model is None or model == name:
        return None
    if not isinstance(model, str):
        raise parse.Invalid(f"'model' must be a string, got {model!r:.60}", "model")
    base, _, kind = model.rpartition(":")
    if base == name and kind in KINDS:
        return kind
    exc = parse.ModelNotFound(not_served(model, name))
    exc.param = "model"
    raise exc


def not_served(model: str, name: str) -> str:
    return f"the model {model!r} does not exist here; served: {', '.join(model_ids(name))}"


def _token_arrays(given: Any) -> list[Any] | None:
    if isinstance(given, list) and given and all(isinstance(x, int) and not isinstance(x, bool) for x in given):
        return [given]
    if isinstance(given, list) and given and any(isinstance(x, list) for x in given):
        return given
    return None


def embeddings_request(body: Any, server: Any, path_kind: str | None) -> tuple[dict[str, Any], str]:
    """Check an OpenAI embeddings body: ``(keyword arguments of _Server.embed, encoding_format)``."""
    cfg = server.config
    body = parse.fields(body, FIELDS, "input")
    rows = _token_arrays(body["input"])
    if rows is not None and not cfg.accept_token_ids:
        raise parse.Invalid(TOKEN_IDS_REFUSED, "input")
    items = parse.inputs(body["input"] if rows is None else rows, "input", cfg.max_inputs)
    if rows is None and not all(isinstance(x, str) for x in items):
        bad = next(i for i, x in enumerate(items) if not isinstance(x, str))
        raise parse.Invalid(f"input[{bad}] must be a string, got {type(items[bad]).__name__}", "input")
    parse.optional(body, "user", (str,), "a string")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise parse.Invalid(f"'encoding_format' must be float or base64, got {fmt!r}", "encoding_format")
    dims = parse.optional(body, "dimensions", (int,), "an int")
    if dims is not None and dims != server.encoder.dim:
        raise parse.Invalid(f"'dimensions' must be {server.encoder.dim} (this model's size) or absent, got {dims}",
                            "dimensions")
    kind = parse.one_kind({
        "the path": path_kind, "'model'": _model_kind(body.get("model"), server.model_name),
        "'kind'": None if body.get("kind") is None else parse.kind(body["kind"]),
    })
    return {"kind": kind or "passage", "items": items, "normalize": None, "token_ids": rows is not None}, fmt


def routes(app: FastAPI, server: Any) -> None:
    cfg = server.config

    async def embeddings(request: Request, path_kind: str | None) -> Response:
        try:
            args, fmt = embeddings_request(await parse.read_json(request, cfg.max_body_bytes), server, path_kind)
            vecs, n_tokens = await server.embed(**args)
        except Exception as exc:
            return parse.error(exc, openai=True)

        def encode(v: np.ndarray) -> Any:
            return base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()

        return JSONResponse({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vecs)],
            "model": server.model_name,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        })

    @app.post("/v1/embeddings")
    async def v1_embeddings(request: Request) -> Response:
        return await embeddings(request, None)

    @app.post("/v1/{kind}/embeddings")
    async def v1_kind_embeddings(kind: str, request: Request) -> Response:
        if kind not in KINDS:
            message = f"no route /v1/{kind}/embeddings; use /v1/embeddings, /v1/query/embeddings or /v1/passage/embeddings"
            return JSONResponse(parse.openai_error(message, 404, "not_found"), status_code=404)
        return await embeddings(request, kind)

    def card(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": server.created, "owned_by": "bowrt"}

    @app.get("/v1/models")
    async def v1_models() -> Response:
        return JSONResponse({"object": "list", "data": [card(m) for m in model_ids(server.model_name)]})

    @app.get("/v1/models/{model_id:path}")
    async def v1_model(model_id: str) -> Response:
        if model_id not in model_ids(server.model_name):
            body = parse.openai_error(not_served(model_id, server.model_name), 404, "model_not_found", "model")
            return JSONResponse(body, status_code=404)
        return JSONResponse(card(model_id))
