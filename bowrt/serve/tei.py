"""TEI's routes, as ``huggingface_hub.InferenceClient(base_url).feature_extraction`` and curl use them.

``POST /embed`` and its alias ``POST /`` (where the Hugging Face client posts) take TEI's
``EmbedRequest``: ``inputs`` (a string or a list; bowrt also takes ``(title, text)`` pairs
and ``{"title", "text"}`` dicts as passages), ``truncate`` (default true: cut at the kind's max
length; false: an over-long input is a 422 naming it and its token count), ``truncation_direction``
(``right``, the default, keeps the start; ``left`` keeps the end), ``prompt_name``
(``query`` -> query rules, ``passage`` or ``document`` -> passage rules), ``normalize`` (default:
the bundle's, raw vectors for bowdpr, where TEI's default is true) and ``dimensions`` (this
model's size or absent). bowrt's own ``kind`` field picks the rules too (default passage).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from bowrt.serve import parse

FIELDS = ("inputs", "kind", "prompt_name", "normalize", "truncate", "truncation_direction", "dimensions")
# TEI applies a sentence-transformers prompt by name; here a name picks the bundle's rules.
PROMPT_NAMES = {"query": "query", "passage": "passage", "document": "passage"}


def embed_request(body: Any, max_inputs: int, dim: int) -> dict[str, Any]:
    """Check a TEI embed body: the keyword arguments of ``_Server.embed``."""
    body = parse.fields(body, FIELDS, "inputs")
    items = parse.inputs(body["inputs"], "inputs", max_inputs)
    normalize = parse.optional(body, "normalize", (bool,), "true or false")
    truncate = parse.optional(body, "truncate", (bool,), "true or false")
    direction = parse.optional(body, "truncation_direction", (str,), "right or left")
    if direction is not None and direction.lower() not in ("right", "left"):
        raise parse.Invalid(f"'truncation_direction' must be right or left, got {direction!r}", "truncation_direction")
    prompt = parse.optional(body, "prompt_name", (str,), "a string")
    if prompt is not None and prompt not in PROMPT_NAMES:
        raise parse.Invalid(f"'prompt_name' must be one of {', '.join(PROMPT_NAMES)}, got {prompt!r}", "prompt_name")
    dims = parse.optional(body, "dimensions", (int,), "an int")
    if dims is not None and dims != dim:
        raise parse.Invalid(f"'dimensions' must be {dim} (this model's size) or absent, got {dims}", "dimensions")
    kind = parse.one_kind({"'kind'": None if body.get("kind") is None else parse.kind(body["kind"]),
                           "'prompt_name'": PROMPT_NAMES.get(prompt)})
    return {"kind": kind or "passage", "items": items, "normalize": normalize,
            "truncate": True if truncate is None else truncate, "direction": (direction or "right").lower()}


def routes(app: FastAPI, server: Any) -> None:
    cfg = server.config

    async def embed(request: Request) -> Response:
        try:
            body = await parse.read_json(request, cfg.max_body_bytes)
            vecs, _ = await server.embed(**embed_request(body, cfg.max_inputs, server.encoder.dim))
        except Exception as exc:
            return parse.error(exc, openai=False)
        return Response(json.dumps(vecs.tolist()), media_type="application/json")

    app.post("/embed")(embed)
    app.post("/")(embed)  # TEI serves the model's task at POST /: where InferenceClient(base_url) posts
