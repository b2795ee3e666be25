"""Text in, token ids out: input validation, the bundle's text rules, tokenization.

Validation is cheap and happens for a whole request before any tokenizing, so a
bad item fails the request with nothing half-done, and the dynamic batcher can
run it in the caller's thread. Tokenizers are configured once, at load, from
the bundle manifest: truncation at the query or passage max length, no padding
(padding happens per batch, to the longest row; see ``encoder.pad_batch``).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from tokenizers import Tokenizer

from bowrt.bundle import KINDS as BUNDLE_KINDS
from bowrt.bundle import TextRules
from bowrt.errors import BundleFormatError, InputError, InputTypeError

Kind = Literal["query", "passage"]
KINDS: tuple[Kind, ...] = BUNDLE_KINDS  # type: ignore[assignment]
Direction = Literal["right", "left"]
DIRECTIONS: tuple[Direction, ...] = ("right", "left")  # which end truncation cuts: right keeps the start
# Second, longer prefix for texts the character cap cannot prove exact (see TextTokenizer).
FALLBACK_FACTOR = 8
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Tokens:
    """Token ids of one request, unpadded, in the caller's order.

    ``Encoder.tokenize_*`` makes them; ``Encoder.encode_tokens`` runs them.
    ``Encoder.batcher`` queues the rows one by one (their ``lengths`` are the
    batcher's costs) and runs merged rows as a new ``Tokens``: each text is
    tokenized exactly once.
    """

    kind: Kind
    ids: tuple[list[int], ...]
    tokenize_s: float = 0.0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(row) for row in self.ids]

    def rows(self) -> list[TokenRow]:
        """One :class:`TokenRow` per item: submit them to :meth:`Encoder.batcher`."""
        return [TokenRow(self.kind, tuple(r)) for r in self.ids]


@dataclass(frozen=True)
class TokenRow:
    """One item already tokenized for ``kind`` (special tokens included). An Encoder's
    batcher queues it as it is, checked, not tokenized again: this is how a caller that
    tokenized with per-call options (:meth:`Encoder.tokenize`, :meth:`Encoder.tokenize_ids`)
    uses the batcher (the server does)."""

    kind: Kind
    ids: tuple[int, ...]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id rows: ``(input_ids, attention_mask)``, int64. To the longest row
    (the runtime: never to the max length), or to ``length`` (Triton's fixed shapes)."""
    width = max((len(r) for r in rows), default=0) if length is None else length
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, seq in enumerate(rows):
        ids[r, : len(seq)] = seq
        mask[r, : len(seq)] = 1
    return ids, mask


# --- validation and text rules ---------------------------------------------------
def _check_container(items: Any, what: str, one: str) -> None:
    if isinstance(items, (str, bytes)):
        # Iterating a str would encode it character by character: a classic mistake.
        raise InputTypeError(
            f"{what} must be a list or tuple, got a bare {type(items).__name__}: "
            f"wrap a single {one} in a list, e.g. [{one}]"
        )
    if not isinstance(items, (list, tuple)):
        raise InputTypeError(
            f"{what} must be a list or tuple, got {type(items).__name__}; convert it with list(...)"
        )


def _type_hint(x: Any) -> str:
    if x is None:
        return "None"
    if isinstance(x, (bytes, bytearray)):
        return f"{type(x).__name__} (decode it first, e.g. x.decode('utf-8'))"
    return type(x).__name__


def validate_queries(items: Any, rules: TextRules) -> list[str]:
    """Check every query and return the texts to tokenize (query prefix applied)."""
    _check_container(items, "queries", "query")
    out = []
    for i, q in enumerate(items):
        if not isinstance(q, str):
            raise InputTypeError(f"queries[{i}] is {_type_hint(q)}; each query must be a str")
        out.append(rules.format_query(q))
    return out


def format_passage(item: Any, index: int, rules: TextRules) -> str:
    """One passage item -> the text the model sees.

    An item is a str, a ``(title, text)`` pair (tuple or list), or a dict with
    ``text`` and an optional ``title`` (other keys, e.g. an id, are ignored).
    A non-empty title gives ``passage_format`` (``"{title} {text}"``: one
    segment, no [SEP] between), otherwise the text alone; then the passage prefix.
    """
    where = f"passages[{index}]"
    if isinstance(item, str):
        title, text = None, item
    elif isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise InputError(f"{where} is a {type(item).__name__} of {len(item)} items; a pair must be (title, text)")
        title, text = item
    elif isinstance(item, dict):
        if "text" not in item:
            raise InputError(f"{where} is a dict without a 'text' key (keys: {sorted(map(str, item))}); expected {{'title': ..., 'text': ...}}")
        title, text = item.get("title"), item["text"]
    else:
        raise InputTypeError(f"{where} is {_type_hint(item)}; a passage must be a str, a (title, text) pair or a dict with 'text'")
    if not isinstance(text, str):
        raise InputTypeError(f"{where}: text is {_type_hint(text)}; it must be a str")
    if title is not None and not isinstance(title, str):
        raise InputTypeError(f"{where}: title is {_type_hint(title)}; it must be a str or None")
    return rules.format_passage(title, text)


def validate_passages(items: Any, rules: TextRules) -> list[str]:
    """Check every passage and return the texts to tokenize."""
    _check_container(items, "passages", "passage")
    return [format_passage(p, i, rules) for i, p in enumerate(items)]


# --- tokenization ----------------------------------------------------------------
class TextTokenizer:
    """One ``tokenizers.Tokenizer`` configured for one max length.

    Queries and passages get separate instances: truncation is a property of
    the tokenizer object, and setting it per call would race between threads.
    """

    def __init__(self, path: str | Path, max_length: int, direction: Direction = "right", truncate: bool = True):
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exception
            raise BundleFormatError(f"cannot load tokenizer {str(path)!r}: {e}") from e
        # Override whatever the file says (some tokenizer.json files pad to max length).
        tok.no_padding()
        if truncate:
            tok.enable_truncation(max_length=max_length, direction=direction)
        else:
            tok.no_truncation()  # the whole text: its true token count, checked by the caller
        self._tok, self._path = tok, path
        self.max_length, self.direction, self.truncate = max_length, direction, truncate
        self._variants: dict[tuple[str, bool], TextTokenizer] = {}
        self._variants_lock = threading.Lock()
        pad = tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad
        # Character cap: only the first max_length tokens are kept, so never hand
        # megabytes to the tokenizer. Safe for WordPiece because words are
        # bounded: a word (split at whitespace and punctuation) longer than
        # max_input_chars_per_word (100 for BERT) is one [UNK]. So if the cut text
        # fills max_length tokens and the last kept token ends at least two word
        # lengths before the cut, every kept token's word lies wholly inside the
        # cut, and the ids equal those of the full text (`_cut_is_exact`). Natural
        # text (~5 chars a token) always passes; text averaging hundreds of chars
        # a token (runs of spaces, endless words) is retokenized from a prefix
        # FALLBACK_FACTOR times longer, and that is where we stop: no input,
        # however crafted, costs more than a bounded prefix. BPE/Unigram words
        # are unbounded, so those tokenizers get no cap.
        # Left truncation mirrors this: the cut keeps the end, the check the first kept token.
        # Without truncation there is no cap: the caller asked for the whole text's tokens.
        self._word_chars: int | None = getattr(tok.model, "max_input_chars_per_word", None)
        self.char_cap: int | None = max_length * self._word_chars if self._word_chars and truncate else None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def special_ids(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text's own (``[CLS]``, ``[SEP]``)."""
        full = self._tok.encode("a").ids
        bare = self._tok.encode("a", add_special_tokens=False).ids
        k = next((k for k in range(len(full)) if full[k:k + len(bare)] == bare), None)
        if not bare or k is None:
            raise InputError("this bundle's tokenizer does not wrap a text in special tokens; token arrays are not supported")
        return full[:k], full[k + len(bare):]

    def variant(self, direction: Direction = "right", truncate: bool = True) -> TextTokenizer:
        """This tokenizer with other truncation settings: built on first use, then kept
        (truncation is a property of the Rust object, so each setting is its own object)."""
        if (direction, truncate) == (self.direction, self.truncate):
            return self
        with self._variants_lock:
            key = (direction, truncate)
            if key not in self._variants:
                self._variants[key] = TextTokenizer(self._path, self.max_length, direction, truncate)
            return self._variants[key]

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids (with [CLS]/[SEP]), truncated at max_length, unpadded."""
        if not texts:
            return []
        try:
            return self._encode(texts)
        except TypeError:
            # Lone surrogates ("\ud800" from JSON escapes or surrogateescape'd
            # bytes) are not Unicode scalar values and the Rust side refuses the
            # whole batch: replace them, as a decoder would, and retry.
            return self._encode([_SURROGATES.sub("\ufffd", t) for t in texts])

    def _encode(self, texts: list[str]) -> list[list[int]]:
        cap = self.char_cap
        if cap is None:
            return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=True)]
        cut = [t if len(t) <= cap else self._cut(t, cap) for t in texts]
        encs = self._tok.encode_batch(cut, add_special_tokens=True)
        ids = [e.ids for e in encs]
        redo = [
            i for i, (t, e) in enumerate(zip(texts, encs))
            if len(t) > cap and not self._cut_is_exact(e, cap)
        ]
        if redo:
            longer = cap * FALLBACK_FACTOR
            full = self._tok.encode_batch([self._cut(texts[i], longer) for i in redo], add_special_tokens=True)
            for i, e in zip(redo, full):
                ids[i] = e.ids
        return ids

    def _cut_is_exact(self, enc: Any, cut_len: int) -> bool:
        # Exact when truncation kicked in (the full text cannot have fewer tokens)
        # and every kept token's word ends inside the cut text, before a boundary
        # character: the last kept token ends at `end`, its word at most one max
        # word length later. The margin is doubled for normalizers that drop
        # characters (accents, control chars) inside a word.
        # Left truncation keeps the end: mirrored, the first kept token must start at
        # least as far after the cut's start (special tokens, at offset 0, excluded).
        if len(enc.ids) < self.max_length:
            return False
        if self.direction == "left":
            start = min((s for (s, _), special in zip(enc.offsets, enc.special_tokens_mask) if not special),
                        default=0)
            return start >= 2 * self._word_chars + 1
        end = max((e for _, e in enc.offsets), default=0)
        return end + 2 * self._word_chars + 1 <= cut_len

    def _cut(self, text: str, length: int) -> str:
        return text[-length:] if self.direction == "left" else text[:length]


def tokenize(tokenizer: TextTokenizer, kind: Kind, texts: list[str]) -> Tokens:
    t0 = time.perf_counter()
    ids = tokenizer.encode(texts)
    return Tokens(kind, tuple(ids), time.perf_counter() - t0)


# --- per-call options and token ids ------------------------------------------------
def tokenize_with(tokenizer: TextTokenizer, kind: Kind, texts: list[str], rules: TextRules, *, truncate: bool = True,
                  direction: Direction = "right") -> Tokens:
    """:func:`tokenize` with the caller's truncation (TEI's fields): ``truncate=False`` refuses an
    item over the max length, naming it and its token count, instead of cutting it;
    ``direction="left"`` keeps the end of the text (refused where it would cut the kind's prefix)."""
    prefix = _prefix(rules, kind)
    if not isinstance(truncate, bool):
        raise InputTypeError(f"truncate must be True or False, got {truncate!r}")
    if direction not in DIRECTIONS:
        raise InputError(f"truncation_direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if direction == "left" and truncate and prefix:
        raise InputError(f"left truncation would cut this bundle's {kind} prefix {prefix!r}; use right truncation")
    tokens = tokenize(tokenizer.variant(direction, truncate), kind, texts)
    if not truncate:
        where = "queries" if kind == "query" else "passages"
        for i, n in enumerate(tokens.lengths):
            if n > tokenizer.max_length:
                raise InputError(f"{where}[{i}] has {n} tokens, more than the {kind} limit of {tokenizer.max_length} "
                                 f"(special tokens included); shorten it or allow truncation")
    return tokens


def token_id_rows(tokenizer: TextTokenizer, kind: Kind, rows: Any, rules: TextRules) -> Tokens:
    """Token arrays (ids of THIS tokenizer's vocabulary, without special tokens) -> :class:`Tokens`:
    wrapped in the special tokens and truncated at the max length, as text is. Ids of another
    vocabulary cannot be told apart in general: only ids outside this one are refused."""
    t0 = time.perf_counter()
    _check_container(rows, "token_ids", "list of ids")
    prefix = _prefix(rules, kind)
    if prefix:
        raise InputError(f"token arrays cannot carry this bundle's {kind} prefix {prefix!r}; send text")
    head, tail = tokenizer.special_ids()
    keep = tokenizer.max_length - len(head) - len(tail)
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or not row:
            raise InputTypeError(f"token_ids[{i}] must be a non-empty list of token ids, got {_type_hint(row)}")
        _check_ids(row, f"token_ids[{i}]", tokenizer.vocab_size)
        out.append([*head, *row[:keep], *tail])
    return Tokens(kind, tuple(out), time.perf_counter() - t0)


def row_ids(rows: list[TokenRow], kind: Kind, tokenizer: TextTokenizer) -> list[list[int]]:
    """Check already tokenized rows before they are queued (kind, length, ids)."""
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, TokenRow) or row.kind != kind:
            raise InputTypeError(f"rows[{i}] is not a {kind} TokenRow; do not mix texts and token rows in one request")
        if not 0 < len(row.ids) <= tokenizer.max_length:
            raise InputError(f"rows[{i}] has {len(row.ids)} tokens; a {kind} row has 1 to {tokenizer.max_length}")
        _check_ids(row.ids, f"rows[{i}]", tokenizer.vocab_size)
        out.append(list(row.ids))
    return out


def _prefix(rules: TextRules, kind: Kind) -> str:
    return rules.query_prefix if kind == "query" else rules.passage_prefix


def _check_ids(ids: Sequence[Any], where: str, vocab_size: int) -> None:
    # The server's every row passes here: check in numpy, and walk the ids one by one only
    # to name the first bad one.
    arr = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
    if arr.ndim == 1 and arr.dtype.kind in "iu" and (arr.size == 0 or (arr.min() >= 0 and arr.max() < vocab_size)):
        return
    for j, x in enumerate(ids):
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not 0 <= x < vocab_size:
            raise InputError(f"{where}[{j}] = {x!r:.40} is not a token id of this model's vocabulary (0 to "
                             f"{vocab_size - 1}); send the ids of this model's tokenizer, or text")
