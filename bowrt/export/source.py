"""Load the source model: a hub id or a local folder, Hugging Face or sentence-transformers layout.

Everything about the model's shape (hidden size, heads, layers) comes from its
config; pooling and max length come from the sentence-transformers files when
they exist. Nothing here assumes BERT-base numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bowrt.bundle import DEFAULT_PASSAGE_MAX_LENGTH, DEFAULT_QUERY_MAX_LENGTH, POOLINGS
from bowrt.errors import ModelNotFoundError, UnsupportedModelError
from bowrt.export.quiet import no_progress_bars

# Encoders whose graph ONNX Runtime's BERT fusions understand.
SUPPORTED_MODEL_TYPES = ("bert",)
HUB_PROBE_TIMEOUT_S = 3.0  # one TCP connect to the hub before huggingface_hub's own retries (~25 s)
_WEIGHT_KEY = re.compile(r"\b[A-Za-z_][\w.]*\.(?:weight|bias)\b")


@dataclass
class Source:
    """A loaded source model plus what the bundle needs to know about it."""

    name: str  # hub id or folder, as given
    revision: str | None
    model: Any  # transformers.PreTrainedModel (BertModel), in eval mode
    tokenizer: Any  # transformers fast tokenizer
    config: Any
    pooling: str
    normalize: bool
    query_max_length: int
    passage_max_length: int

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UnsupportedModelError(f"{path} is not valid JSON: {e}") from e


def sentence_transformers_settings(folder: Path) -> dict[str, Any]:
    """Pooling, normalization and max length from a sentence-transformers folder (empty if none)."""
    out: dict[str, Any] = {}
    modules = _read_json(folder / "modules.json")
    if isinstance(modules, list):
        for mod in modules:
            kind = str(mod.get("type", ""))
            if kind.endswith("Pooling"):
                cfg = _read_json(folder / mod.get("path", "") / "config.json") or {}
                if cfg.get("pooling_mode_cls_token"):
                    out["pooling"] = "cls"
                elif cfg.get("pooling_mode_mean_tokens"):
                    out["pooling"] = "mean"
                else:
                    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
                    raise UnsupportedModelError(
                        f"{folder}: pooling {modes} is not supported; bowrt pools with one of {', '.join(POOLINGS)}"
                    )
            elif kind.endswith("Normalize"):
                out["normalize"] = True
    st_cfg = _read_json(folder / "sentence_bert_config.json")
    if isinstance(st_cfg, dict) and st_cfg.get("max_seq_length"):
        out["max_seq_length"] = int(st_cfg["max_seq_length"])
    return out


def _revision(folder: Path | None, model: Any) -> str | None:
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return str(commit)
    if folder is None:
        return None
    # A local folder has no commit: name the weights by their content instead.
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = folder / name
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return f"sha256:{h.hexdigest()}"
    return None


def load_source(
    model: str,
    *,
    revision: str | None = None,
    pooling: str | None = None,
    query_max_length: int | None = None,
    passage_max_length: int | None = None,
) -> Source:
    """Load ``model`` (hub id or local folder) for export. Raises typed errors with a fix."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the export stage needs the export extra: pip install 'bowrt[export]'") from e

    folder = Path(model) if Path(model).is_dir() else None
    offline = _hub_unavailable() if folder is None else None
    local = {"local_files_only": True} if offline else {}
    config = _load_config(model, folder, revision, offline)
    try:
        # bowrt drops the pooler on purpose (add_pooling_layer=False); export prints its own progress
        with _quiet_pooler_report(), no_progress_bars():
            hf_model = AutoModel.from_pretrained(model, config=config, revision=revision, add_pooling_layer=False, **local)
        tokenizer = AutoTokenizer.from_pretrained(model, revision=revision, use_fast=True, **local)
    except OSError as e:
        raise ModelNotFoundError(f"could not load the weights or tokenizer of {model!r}: {e}") from e
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError(f"{model!r} has no fast (tokenizers) tokenizer; bowrt's runtime needs tokenizer.json")
    hf_model.eval()

    st = sentence_transformers_settings(folder) if folder is not None else {}
    pooling = pooling or st.get("pooling", "cls")
    if pooling not in POOLINGS:
        raise UnsupportedModelError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    query_max_length, passage_max_length = _max_lengths(config, st, query_max_length, passage_max_length)
    return Source(
        name=str(model),
        revision=_revision(folder, hf_model),
        model=hf_model,
        tokenizer=tokenizer,
        config=config,
        pooling=pooling,
        normalize=bool(st.get("normalize", False)),
        query_max_length=query_max_length,
        passage_max_length=passage_max_length,
    )


def _hub_unavailable() -> str | None:
    """Why the model hub cannot be asked (then only the local cache is read), or None.

    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) first; else one TCP connect to the
    endpoint: huggingface_hub retries an unreachable hub five times with backoff (about
    25 s of warnings, no setting bounds it) before transformers falls back to the cache.
    Behind a proxy the probe is skipped (a direct connect says nothing there).
    """
    from huggingface_hub import constants

    if getattr(constants, "HF_HUB_OFFLINE", False):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as e:
        return f"the model hub {constants.ENDPOINT} is unreachable ({e.__class__.__name__}: {e})"
    return None


def _pooler_report_only(record: logging.LogRecord) -> bool:
    """A transformers load report (or 4.x's "Some weights ... were not used") that names only
    pooler weights, all unexpected: what loading with ``add_pooling_layer=False`` gives."""
    msg = record.getMessage()
    keys = set(_WEIGHT_KEY.findall(msg)) or set(re.findall(r"\bpooler\.[\w.]+", msg))
    flagged = ("MISSING", "MISMATCH", "CONVERSION", "newly initialized")
    return bool(keys) and all(k.startswith("pooler.") for k in keys) and not any(f in msg for f in flagged)


@contextlib.contextmanager
def _quiet_pooler_report() -> Iterator[None]:
    """Drop only that report from transformers' model loading log, for the ``with`` block."""
    logger = logging.getLogger("transformers.modeling_utils")

    def keep(record: logging.LogRecord) -> bool:
        return not _pooler_report_only(record)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _not_found(model: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"could not load {model!r}: {why}. Download the model where the hub is reachable "
        f"(`hf download {model} --local-dir DIR`), copy DIR here and pass the folder: `bowrt export DIR -o bundles`"
    )


def _load_config(model: str, folder: Path | None, revision: str | None, offline: str | None = None) -> Any:
    """The model's config, refused unless it names a supported encoder. ``offline``: why
    the hub cannot be asked (only the local cache is read)."""
    from transformers import AutoConfig

    if folder is None and (Path(model).exists() or model.startswith((".", "/", "~"))):
        raise ModelNotFoundError(f"{model!r} is not a model folder")
    if folder is not None and not (folder / "config.json").is_file():
        raise UnsupportedModelError(f"{str(folder)!r} has no config.json: it is not a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(model, revision=revision, **({"local_files_only": True} if offline else {}))
    except OSError as e:
        why = f"{offline}, and it is not in the local Hugging Face cache" if offline else f"{e.__class__.__name__}: {e}"
        raise _not_found(model, why) from e
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{model!r} is a {getattr(config, 'model_type', 'unknown')!r} model; bowrt exports BERT-style "
            f"encoders ({', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    # Eager attention traces to the MatMul/Softmax pattern that ONNX Runtime fuses.
    config._attn_implementation = "eager"
    return config


def _max_lengths(
    config: Any, st: dict[str, Any], query_max_length: int | None, passage_max_length: int | None,
) -> tuple[int, int]:
    """(query, passage) max lengths: as given, else the sentence-transformers setting, else
    the defaults, within the model's position embeddings."""
    max_pos = int(getattr(config, "max_position_embeddings", 512))
    passage_max_length = passage_max_length or min(st.get("max_seq_length", DEFAULT_PASSAGE_MAX_LENGTH), max_pos)
    query_max_length = query_max_length or min(DEFAULT_QUERY_MAX_LENGTH, passage_max_length)
    for what, n in (("query", query_max_length), ("passage", passage_max_length)):
        if not 2 <= n <= max_pos:
            raise UnsupportedModelError(f"{what} max length {n} is outside 2..{max_pos} (the model's max_position_embeddings)")
    return int(query_max_length), int(passage_max_length)
