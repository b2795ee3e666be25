"""Reading a corpus file: one :class:`Record` or :class:`Reject` a line, streamed."""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bowrt.corpus.settings import FORMATS, KINDS
from bowrt.errors import CorpusError
from bowrt.options import check_choice

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".txt": "lines"}


@dataclass(frozen=True)
class Record:
    line: int
    id: str
    item: Any  # a str, or {"title": ..., "text": ...}
    raw: bytes


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    raw: bytes


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def detect_format(path: Path) -> str:
    """By extension (``.jsonl``, ``.tsv``, ``.txt``, before any ``.gz``), else by the first non-blank line."""
    suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    if suffix.lower() in _SUFFIXES:
        return _SUFFIXES[suffix.lower()]
    with _open(path) as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip("\r\n")
            if line.strip():
                return "jsonl" if line.lstrip().startswith("{") else "tsv" if "\t" in line else "lines"
    return "lines"


def check_input(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or :class:`CorpusError` when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"input {str(path)!r} does not exist or is not a file")
    return path


def _check_id(value: Any) -> str | None:
    """The id as text, or None when it cannot be one line of ``ids-*.txt``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if text.strip() and "\n" not in text and "\r" not in text else None


def _parse_jsonl(line: str) -> tuple[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    key = "id" if "id" in obj else "_id" if "_id" in obj else None
    if key is None:
        raise ValueError("missing 'id'")
    rid = _check_id(obj[key])
    if rid is None:
        raise ValueError(f"'{key}' must be a non-empty str or int on one line, got {obj[key]!r:.60}")
    if "text" not in obj:
        raise ValueError("missing 'text'")
    text, title = obj["text"], obj.get("title")
    if not isinstance(text, str):
        raise ValueError(f"'text' must be a str, got {type(text).__name__}")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"'title' must be a str or null, got {type(title).__name__}")
    return rid, (text, title)


def _parse_tsv(line: str) -> tuple[str, Any]:
    fields = next(csv.reader([line], delimiter="\t", strict=False))
    if len(fields) not in (2, 3):
        raise ValueError(f"expected 2 or 3 tab-separated fields (id, text[, title]), got {len(fields)}")
    rid = _check_id(fields[0])
    if rid is None:
        raise ValueError("empty id")
    return rid, (fields[1], fields[2] if len(fields) == 3 else None)


def _parse(line: str, number: int, fmt: str) -> tuple[str, str, str | None]:
    """(id, text, title) of one decoded line; ValueError naming what is wrong with it."""
    if fmt == "lines":
        rid, (text, title) = str(number), (line, None)
    elif not line.strip():
        raise ValueError("blank line")
    else:
        rid, (text, title) = _parse_jsonl(line) if fmt == "jsonl" else _parse_tsv(line)
    if not text.strip():
        raise ValueError("empty text")
    return rid, text, title


def read_corpus(path: str | os.PathLike[str], fmt: str = "auto", kind: str = "passage") -> Iterator[Record | Reject]:
    """Every line of ``path`` as a :class:`Record` or a :class:`Reject` (1-based line numbers)."""
    path = Path(path)
    check_choice("fmt", fmt, FORMATS)
    check_choice("kind", kind, KINDS)
    check_input(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield Reject(number, f"not valid UTF-8 ({e.reason} at byte {e.start})", raw)
                continue
            if number == 1:
                line = line.lstrip("\ufeff")
                if fmt == "tsv" and line.split("\t")[0].strip().lower() == "id":
                    continue  # the header line of psgs_w100.tsv
            try:
                rid, text, title = _parse(line, number, fmt)
            except ValueError as e:
                yield Reject(number, str(e), raw)
                continue
            # Queries take no title; a passage with a title becomes "{title} {text}" in the Encoder.
            item = text if kind == "query" or not title else {"title": title, "text": text}
            yield Record(number, rid, item, raw)
