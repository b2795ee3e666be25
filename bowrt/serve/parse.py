"""Request parsing and error mapping for the server: bounded JSON bodies, field checks,
and one typed error -> HTTP status, in TEI's or OpenAI's error shape (STYLE: TEI's error
enum -> status): 401 bad key, 404 unknown model, 413 too large, 422 invalid input, 429
overloaded, 503 not ready or closed, 504 timeout, 500 otherwise.

TEI's shape: ``{"error": message, "error_type": kind}``. OpenAI's, on every ``/v1`` error:
``{"error": {"message", "type", "param", "code"}}`` with ``type`` ``invalid_request_error``
(4xx) or ``server_error`` (5xx), ``param`` the field at fault or null, and ``code`` a string
(``invalid_api_key``, ``model_not_found``, ``validation``, ``payload_too_large``,
``rate_limit_exceeded``, ...), as OpenAI sends them (its client reads them as strings)."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

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
from bowrt.runtime.tokenize import KINDS

log = logging.getLogger("bowrt.serve")


class Invalid(InputError):
    """A malformed body: not JSON, wrong field types, unknown fields (422); ``param``: the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ModelNotFound(BowrtError):
    """A request's ``model`` is not one this server serves (404, OpenAI's ``model_not_found``)."""


class NotReady(BowrtError):
    """The model is still loading or the server is shutting down (503)."""


async def read_json(request: Request, limit: int) -> Any:
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
        raise Invalid(f"request body is not valid JSON: {e}") from None


def fields(body: Any, valid: tuple[str, ...], required: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid(f"request body must be a JSON object with {required!r}, got {type(body).__name__}")
    unknown = sorted(set(body) - set(valid))
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}", unknown[0])
    if required not in body:
        raise Invalid(f"missing field {required!r}", required)
    return body


def inputs(value: Any, field: str, max_inputs: int) -> list[Any]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Invalid(f"{field!r} must be a string or a list, got {type(value).__name__}", field)
    if not items:
        raise Invalid(f"{field!r} is empty", field)
    if len(items) > max_inputs:
        raise RequestTooLarge(f"{len(items)} inputs exceed the limit of {max_inputs} per request; split the request")
    return items


def kind(value: Any) -> str:
    if value not in KINDS:
        raise Invalid(f"'kind' must be one of {', '.join(KINDS)}, got {value!r}", "kind")
    return value


def one_kind(given: dict[str, str | None]) -> str | None:
    """The kind the request names, in one or more ways (``{"field 'kind'": "query", ...}``);
    None when none does; two that disagree are a 422 naming both."""
    named = {where: k for where, k in given.items() if k is not None}
    if len(set(named.values())) > 1:
        raise Invalid("the request names two kinds: " + ", ".join(f"{k!r} by {w}" for w, k in named.items()))
    return next(iter(named.values()), None)


def optional(body: dict, name: str, types: tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
        raise Invalid(f"{name!r} must be {what}, got {value!r:.60}", name)
    return value


def error(exc: Exception, openai: bool) -> JSONResponse:
    """One typed error -> status (TEI's mapping), in TEI or OpenAI error shape."""
    headers = {}
    if isinstance(exc, ModelNotFound):
        status, kind = 404, "model_not_found"
    elif isinstance(exc, RequestTooLarge):
        status, kind = 413, "payload_too_large"
    elif isinstance(exc, (InputError, InputTypeError, OptionError)):
        status, kind = 422, "validation"
    elif isinstance(exc, Overloaded):
        status, kind, headers = 429, "overloaded", {"Retry-After": "1"}
    elif isinstance(exc, (BatcherClosed, NotReady)):
        status, kind = 503, "unavailable"
    elif isinstance(exc, RequestTimeout):
        status, kind = 504, "timeout"
    elif isinstance(exc, BatchFailed):
        status, kind = 500, "backend"
        log.error("batch failed: %s", exc, exc_info=exc.__cause__)
    else:
        log.exception("unexpected error", exc_info=exc)
        status, kind, exc = 500, "internal", RuntimeError("internal error")
    param = getattr(exc, "param", None)
    if isinstance(exc, (InputError, InputTypeError)) and not isinstance(exc, (Invalid, RequestTooLarge)):
        exc, param = InputError(f"invalid input: {exc}"), "input"  # the item index is in the message (passages[3] ...)
    if not openai:
        return JSONResponse({"error": str(exc), "error_type": kind}, status_code=status, headers=headers)
    code = {"overloaded": "rate_limit_exceeded"}.get(kind, kind)
    return JSONResponse(openai_error(str(exc), status, code, param), status_code=status, headers=headers)


def openai_error(message: str, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
