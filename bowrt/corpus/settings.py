"""A corpus job's settings, one frozen object, checked when it is made."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bowrt.bundle import KINDS
from bowrt.errors import OptionError
from bowrt.options import check_bool, check_choice, check_int

FORMATS = ("auto", "jsonl", "tsv", "lines")
DTYPES = ("float32", "float16")
ON_ERROR = ("skip", "stop")
DEFAULT_SHARD_SIZE = 50_000  # 150 MB of float32 768-d vectors a shard
ENCODE_CHUNK = 4096  # texts per Encoder call: bounds token-id memory, still long enough to sort by length


@dataclass(frozen=True, kw_only=True)
class CorpusSettings:
    """How a corpus job reads its input and writes its output folder.

    ``kind``: ``"passage"`` (title + text, passage max length) or ``"query"``.
    ``fmt``: ``"auto"`` (by extension, else by the first line), ``"jsonl"``, ``"tsv"``, ``"lines"``.
    ``shard_size``: vectors a shard. ``dtype``: ``"float32"`` or ``"float16"``.
    ``on_error``: ``"skip"`` writes unusable lines to ``rejects.jsonl``; ``"stop"``
    raises :class:`~bowrt.errors.CorpusLineError` at the first one.
    ``overwrite``: replace an output folder holding a job with other settings.
    ``progress``: a progress line on stderr: lines done of the total, texts/s, ETA
    (:mod:`~bowrt.corpus.progress`).
    """

    kind: str = "passage"
    fmt: str = "auto"
    shard_size: int = DEFAULT_SHARD_SIZE
    dtype: str = "float32"
    on_error: str = "skip"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_choice("fmt", self.fmt, FORMATS)
        check_int("shard_size", self.shard_size)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("on_error", self.on_error, ON_ERROR)
        check_bool("overwrite", self.overwrite)
        check_bool("progress", self.progress)


_FIELDS = tuple(f.name for f in dataclasses.fields(CorpusSettings))


def corpus_settings(settings: CorpusSettings | None = None, **options: Any) -> CorpusSettings:
    """``settings`` (default :class:`CorpusSettings`'s defaults) with ``options`` replacing its fields."""
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        raise OptionError(f"unknown corpus option {', '.join(unknown)}; valid: {', '.join(_FIELDS)}")
    if settings is None:
        return CorpusSettings(**options)
    if not isinstance(settings, CorpusSettings):
        raise OptionError(f"settings must be a CorpusSettings, got {type(settings).__name__}")
    return dataclasses.replace(settings, **options) if options else settings
