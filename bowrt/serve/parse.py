"""Request parsing and error mapping for the server: bounded JSON bodies, field checks,
and one typed error -> HTTP status, in TEI's or OpenAI's error shape (STYLE: TEI's error
enum -> status): 401 bad key, 413 too large, 422 invalid input, 429 overloaded, 503 not
ready or closed, 504 timeout, 500 otherwise."""

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
    """A malformed body: not JSON, wrong field types, unknown fields (422)."""


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
        raise Invalid(f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    if required not in body:
        raise Invalid(f"missing field {required!r}")
    return body


def inputs(value: Any, field: str, max_inputs: int) -> list[Any]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Invalid(f"{field!r} must be a string or a list, got {type(value).__name__}")
    if not items:
        raise Invalid(f"{field!r} is empty")
    if len(items) > max_inputs:
        raise RequestTooLarge(f"{len(items)} inputs exceed the limit of {max_inputs} per request; split the request")
    return items


def kind(value: Any) -> str:
    if value not in KINDS:
        raise Invalid(f"'kind' must be one of {', '.join(KINDS)}, got {value!r}")
    return value


def optional(body: dict, name: str, types: tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
        raise Invalid(f"{name!r} must be {what}, got {value!r:.60}")
    return value


def error(exc: Exception, openai: bool) -> JSONResponse:
    """One typed error -> status (TEI's mapping), in TEI or OpenAI error shape."""
    headers = {}
    if isinstance(exc, RequestTooLarge):
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
    if isinstance(exc, (InputError, InputTypeError)) and not isinstance(exc, (Invalid, RequestTooLarge)):
        exc = InputError(f"invalid input: {exc}")  # the item index is in the message (passages[3] ...)
    body = {"error": {"message": str(exc), "type": kind, "code": status}} if openai else {"error": str(exc), "error_type": kind}
    return JSONResponse(body, status_code=status, headers=headers)
