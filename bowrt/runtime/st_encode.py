"""``Encoder.encode``: the call shape of sentence-transformers' ``SentenceTransformer.encode``.

    model = Encoder("bundles/int8")                # was: SentenceTransformer("bowdpr/...")
    p = model.encode(passages)                     # [n, dim] float32; one str -> [dim]
    q = model.encode(queries, prompt_name="query") # or kind="query", or model.encode_query(queries)

The same vectors as ``encode_passages``/``encode_queries`` (bit for bit with the default
``batch_size``): it validates and tokenizes with their rules and runs the rows through the
same ``Encoder.run_tokens`` (one plan, the same token budget; ``batch_size`` bounds its rows). What it cannot honour is refused with
:class:`OptionError`, never ignored: ``prompt`` (the bundle's text rules format each kind),
``convert_to_tensor`` (the runtime has no torch: ``torch.from_numpy(enc.encode(...))``),
``device`` (chosen at load: ``providers=``, ``device_id=``), other ``precision`` or
``output_value``, ``truncate_dim``, ``pool`` and ``chunk_size``.
"""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from bowrt.errors import OptionError
from bowrt.options import check_bool, check_choice, check_int
from bowrt.runtime.tokenize import KINDS, Tokens

if TYPE_CHECKING:
    from bowrt.runtime.encoder import Encoder

# prompt_name -> kind: sentence-transformers model cards name their prompts "query" and
# "document" (or "passage").
PROMPT_KINDS = {"query": "query", "passage": "passage", "document": "passage"}
PLURAL = {"query": "queries", "passage": "passages"}
# Accepted only at sentence-transformers' default: name -> (default, why not otherwise).
FIXED = {
    "prompt": (None, "the bundle's text rules format queries and passages; choose them with kind= or prompt_name="),
    "convert_to_tensor": (False, "the runtime has no torch; use torch.from_numpy(enc.encode(...))"),
    "device": (None, "the device is chosen at load: Encoder(bundle, providers='cuda', device_id=N)"),
    "precision": ("float32", "vectors are float32; quantize them afterwards if needed"),
    "output_value": ("sentence_embedding", "the graph returns pooled vectors only"),
    "truncate_dim": (None, "bowdpr is not trained for truncated vectors"),
    "pool": (None, "one Encoder is one ORT session; for many processes use bowrt encode --ray"),
    "chunk_size": (None, "no multi-process pool"),
}


def encode(self: Encoder, inputs: Any, kind: str | None = None, *, prompt_name: str | None = None,
           batch_size: int | None = None, show_progress_bar: bool | None = None, convert_to_numpy: bool = True,
           normalize_embeddings: bool | None = None, **options: Any) -> Any:
    """Texts -> vectors, as ``SentenceTransformer.encode``.

    Args:
        inputs: one item or a list; an item is a str, or for passages also a
            ``(title, text)`` pair or a ``{"title", "text"}`` dict (in a list). A single str
            (or dict) gives one 1-D vector ``[dim]``, a list ``[len(inputs), dim]``.
        kind: ``"passage"`` (default) or ``"query"``: which text rules and max length.
        prompt_name: sentence-transformers' switch: ``"query"``, or ``"document"`` /
            ``"passage"``; the same as ``kind`` (both given: they must agree).
        batch_size: most rows per batch for this call (default: the Encoder's
            ``max_batch_size``); batches are also bounded by its token budget
            (``max_batch_tokens``), which is what usually sizes them.
        show_progress_bar: a progress line on stderr, per batch (no tqdm needed).
        convert_to_numpy: True: one float32 array; False: a list of 1-D arrays.
        normalize_embeddings: L2-normalize; None (default) follows the bundle (False for
            bowdpr: raw dot products), as ``normalize`` in ``encode_*``.
        options: sentence-transformers' other arguments, accepted at their defaults only
            (``prompt``, ``convert_to_tensor``, ``device``, ``precision``, ``output_value``,
            ``truncate_dim``, ``pool``, ``chunk_size``); anything else is an unknown option.
    """
    kind = _kind(kind, prompt_name)
    _check_fixed(options)
    rows = self.max_batch_size if batch_size is None else min(check_int("batch_size", batch_size), self.max_batch_size)
    progress = show_progress_bar is not None and check_bool("show_progress_bar", show_progress_bar)
    check_bool("convert_to_numpy", convert_to_numpy)
    self._normalize_flag(normalize_embeddings)  # fail before any work
    single = isinstance(inputs, (str, dict))
    items = [inputs] if single else inputs
    tokens = self.tokenize_queries(items) if kind == "query" else self.tokenize_passages(items)
    out = _run(self, tokens, rows, normalize_embeddings, progress)
    if single:
        return out[0]
    return out if convert_to_numpy else list(out)


def encode_query(self: Encoder, inputs: Any, **options: Any) -> Any:
    """``encode(inputs, kind="query", ...)``, as ``SentenceTransformer.encode_query``."""
    return encode(self, inputs, _kind(options.pop("kind", None), options.pop("prompt_name", None), "query"), **options)


def encode_document(self: Encoder, inputs: Any, **options: Any) -> Any:
    """``encode(inputs, kind="passage", ...)``, as ``SentenceTransformer.encode_document``."""
    return encode(self, inputs, _kind(options.pop("kind", None), options.pop("prompt_name", None), "passage"), **options)


def _kind(kind: Any, prompt_name: Any, fixed: str | None = None) -> str:
    """The kind from ``kind`` and ``prompt_name`` (and ``encode_query``/``encode_document``'s own)."""
    if kind is not None:
        check_choice("kind", kind, KINDS)
    if prompt_name is not None:
        by_prompt = PROMPT_KINDS.get(prompt_name) if isinstance(prompt_name, str) else None
        if by_prompt is None:
            raise OptionError(f"prompt_name must be one of {', '.join(PROMPT_KINDS)} or None, got {prompt_name!r}")
        if kind is not None and kind != by_prompt:
            raise OptionError(f"kind={kind!r} contradicts prompt_name={prompt_name!r}")
        kind = by_prompt
    if fixed is not None and kind is not None and kind != fixed:
        raise OptionError(f"this method encodes {PLURAL[fixed]}; kind/prompt_name say {kind!r}: use Encoder.encode")
    return kind or fixed or "passage"


def _check_fixed(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(FIXED))
    if unknown:
        valid = [p for p in inspect.signature(encode).parameters if p not in ("self", "inputs", "options")]
        raise OptionError(f"unknown option(s) {', '.join(unknown)} for Encoder.encode; valid: "
                          f"{', '.join(valid + list(FIXED))}")
    for name, value in options.items():
        default, why = FIXED[name]
        if not (value is default or (type(value) is type(default) and value == default)):
            raise OptionError(f"{name}={value!r} is not supported by Encoder.encode (only {default!r}): {why}")


def _run(self: Encoder, tokens: Tokens, rows: int, normalize: bool | None, progress: bool) -> np.ndarray:
    """Run ``tokens`` in one call of ``run_tokens`` (rows per batch bounded by ``rows``); with
    ``progress``, a line on stderr after each batch, from the run's own plan."""
    noun = PLURAL[tokens.kind]

    def line(batch: int, batches: int, done: int) -> None:
        sys.stderr.write(f"\rbowrt encode: batch {batch}/{batches}, {done}/{len(tokens)} {noun}")
        sys.stderr.flush()

    out = self.run_tokens(tokens, normalize, max_batch_size=rows, on_batch=line if progress else None).vectors
    if progress:
        sys.stderr.write("\n" if len(tokens) else f"bowrt encode: 0 {noun}\n")
    return out
