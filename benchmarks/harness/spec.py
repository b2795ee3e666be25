"""A system under test as plain data: :class:`SystemSpec`, and :class:`Unavailable` for one that cannot run.

The bottom of the harness: it imports nothing of the harness, so every adapter, the
registry, the worker and the runner can share it without importing each other.

All systems use the pooling of the bundle under test (CLS for bowdpr and the twin;
MiniLM's mean + normalize for the accuracy table), token_type_ids zeros, the bundle's
query/passage max lengths and text prefixes.
"""

from __future__ import annotations

import importlib.metadata as md
import json
from dataclasses import asdict, dataclass, field


class Unavailable(RuntimeError):
    """This system cannot run here. ``str(e)`` says why; ``fix`` (when there is one) is the one
    step that makes it run, so the report can list every system a step would bring in one line."""

    def __init__(self, reason: str, fix: str | None = None):
        super().__init__(reason)
        self.fix = fix


@dataclass(frozen=True)
class SystemSpec:
    name: str  # "torch", "bowrt-int8", ...
    model_dir: str | None = None  # the Hugging Face folder (peers)
    bundle: str | None = None  # the bowrt bundle (bowrt-*)
    pooling: str = "cls"
    normalize: bool = False
    threads: int = 1
    device: str = "cpu"
    query_max_length: int = 32
    passage_max_length: int = 256
    query_prefix: str = ""
    passage_prefix: str = ""
    files: dict[str, str] = field(default_factory=dict)  # what prepare() produced

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SystemSpec:
        return cls(**json.loads(text))

    def max_len(self, kind: str) -> int:
        return self.query_max_length if kind == "query" else self.passage_max_length

    def prefixed(self, texts: list[str], kind: str) -> list[str]:
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        return [prefix + t for t in texts] if prefix else list(texts)


def is_bowrt(name: str) -> bool:
    """``bowrt-<variant>`` (``bowrt-int8-2`` for a second bundle of one variant) is bowrt; the rest are peers."""
    return name.startswith("bowrt-")


def bowrt_variant(name: str) -> str:
    """The bundle a bowrt system runs: ``bowrt-int8-speed-2`` -> ``int8-speed`` (the variant, then
    the int8 profile where it is not the default; a trailing number only tells two bundles apart)."""
    parts = name.split("-")[1:]
    return "-".join(parts[:-1] if len(parts) > 1 and parts[-1].isdigit() else parts)


def version(pkg: str) -> str | None:
    """The installed version of distribution ``pkg``, or None."""
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None
