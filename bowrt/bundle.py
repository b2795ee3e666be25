"""The bundle: the contract between export and runtime.

A bundle is a folder::

    model.onnx        the graph: input_ids, attention_mask (int64) -> embedding [batch, hidden]
    model.onnx.data   (int8, bowrt >= 0.6) the graph's weights, which model.onnx stores outside itself
    tokenizer.json    a Hugging Face ``tokenizers`` file
    manifest.json     everything else (schema below), including the sha256 of every file

The runtime trusts nothing that the manifest and the checksums do not confirm:
:func:`verify_bundle` verifies every file before it returns. This module imports
only the standard library, so an edge host can verify a bundle with nothing
but bowrt's base install (``bowrt verify BUNDLE``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bowrt.atomic import atomic_folder
from bowrt.errors import (
    BundleChecksumError,
    BundleFormatError,
    BundleMissingFileError,
)

FORMAT = "bowrt-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The Ed25519 signatures of manifest.json's exact bytes (bowrt/signing.py). It is outside the
# manifest (which it signs), so verify_bundle, which checks only the files listed, ignores it.
SIGNATURE_FILE = "manifest.sig"
MODEL_FILE = "model.onnx"
# An int8 bundle's second graph: the same integers with u8 weights, for CPUs whose
# u8 x s8 kernel saturates (bowrt/export/int8/isa.py); the runtime picks at load. Since
# bowrt 0.4 it is derived in memory from model.onnx (``quantization.derived``,
# runtime/twin.py); bundles from before ship it as a file of this name.
U8_MODEL_FILE = "model.u8.onnx"
TOKENIZER_FILE = "tokenizer.json"
# Where an int8 graph of bowrt >= 0.6 keeps its weights: ONNX external data, each tensor at
# an aligned offset, so ONNX Runtime maps them from the file instead of holding a copy
# (bowrt/export/external.py). model.onnx names it; the manifest pins its sha256 like any file.
DATA_FILE = "model.onnx.data"

VARIANTS = ("fp32", "fp16", "int8")
# The two kinds of text, each with its own rules (TextRules: max length, formatting).
KINDS = ("query", "passage")
POOLINGS = ("cls", "mean")

# The CPU kernel families ONNX Runtime's int8 GEMM dispatches to (how each one adds up
# u8 x s8 products: bowrt/export/int8/isa.py). An int8 manifest maps, in
# ``quantization.graphs``, each of its graph files to the ISAs it is exact on.
INT8_ISAS = ("sse", "avx2", "avx512", "avx_vnni", "avx512_vnni", "amx", "arm64")
# Those that accumulate every product in int32: exact for any int8 weights. The others
# add products in saturating int16 pairs (vpmaddubsw). An int8 manifest without
# ``graphs`` (bowrt < 0.2) is taken to be exact on these only.
INT32_ISAS = ("avx_vnni", "avx512_vnni", "amx", "arm64")
# The self-check's reference vectors (a few probe texts, see parity.numerics).
NUMERICS_FILE = "numerics.npz"

# The default model and the way it was evaluated (bowdpr, arXiv 2401.11248).
DEFAULT_MODEL = "bowdpr/bowdpr_wiki_triviaft"
DEFAULT_QUERY_MAX_LENGTH = 32
DEFAULT_PASSAGE_MAX_LENGTH = 256
PASSAGE_FORMAT = "{title} {text}"

# What the export promises the runtime about the CPU graph: the ORT optimizers that must
# stay off there, because the export rewrote what they would fuse (it splits
# SkipLayerNormalization for the CPU variants: bowrt/export/optimize.py). Written into
# ``Manifest.runtime``; runtime/session.py reads it there.
CPU_REWRITE_CONTRACT = {"cpu_disabled_optimizers": ["SkipLayerNormFusion"]}


@dataclass(frozen=True)
class TextRules:
    """How text becomes tokens: the evaluation setup the runtime reproduces."""

    query_max_length: int = DEFAULT_QUERY_MAX_LENGTH
    passage_max_length: int = DEFAULT_PASSAGE_MAX_LENGTH
    # A (title, text) passage is one segment: title + " " + text, no [SEP] between.
    passage_format: str = PASSAGE_FORMAT
    query_prefix: str = ""
    passage_prefix: str = ""
    # The graph takes no token_type_ids: BERT sees segment 0 everywhere.
    token_type_ids: str = "zeros"

    def format_query(self, text: str) -> str:
        return self.query_prefix + text

    def format_passage(self, title: str | None, text: str) -> str:
        """``title + " " + text`` (one segment) when there is a non-blank title, else the text alone."""
        body = self.passage_format.format(title=title, text=text) if title and title.strip() else text
        return self.passage_prefix + body


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Any, ...]


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds (format version 1)."""

    variant: str
    source_model: str
    source_revision: str | None
    hidden_size: int
    pooling: str
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    text: TextRules = field(default_factory=TextRules)
    normalize: bool = False
    similarity: str = "dot"
    num_layers: int | None = None
    num_heads: int | None = None
    quantization: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    tools: dict[str, str] = field(default_factory=dict)
    # How the runtime must run the graph (bowrt >= 0.3): CPU_REWRITE_CONTRACT's keys.
    runtime: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [asdict(t) | {"shape": list(t.shape)} for t in self.inputs]
        d["outputs"] = [asdict(t) | {"shape": list(t.shape)} for t in self.outputs]
        # Put the identifying fields first so a human reading the file sees them.
        head = {k: d.pop(k) for k in ("format", "format_version", "variant", "source_model")}
        return head | d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if not isinstance(d, dict):
            raise BundleFormatError("manifest.json must hold a JSON object")
        if d.get("format") != FORMAT:
            raise BundleFormatError(f"manifest.json is not a bowrt bundle manifest (format={d.get('format')!r})")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleFormatError(
                f"bundle format version {version!r} is not supported by this bowrt "
                f"(it reads version {FORMAT_VERSION}); re-export the bundle or upgrade bowrt"
            )
        try:
            d = dict(d)
            d["inputs"] = tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in d["inputs"])
            d["outputs"] = tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in d["outputs"])
            d["text"] = TextRules(**d.get("text", {}))
            m = cls(**d)
        except (KeyError, TypeError) as e:
            raise BundleFormatError(f"manifest.json is incomplete or has unknown fields: {e}") from e
        if m.variant not in VARIANTS:
            raise BundleFormatError(f"unknown variant {m.variant!r}; known: {', '.join(VARIANTS)}")
        if m.pooling not in POOLINGS:
            raise BundleFormatError(f"unknown pooling {m.pooling!r}; known: {', '.join(POOLINGS)}")
        if not m.outputs:
            raise BundleFormatError("manifest.json declares no output")
        return m


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def read_manifest_bytes(folder: str | os.PathLike[str]) -> bytes:
    """The bytes of ``manifest.json`` (what a signature covers: bowrt/signing.py)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleMissingFileError(f"bundle folder {str(folder)!r} does not exist or is not a folder")
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleMissingFileError(f"{str(path)!r} is missing: {str(folder)!r} is not a bowrt bundle")
    return path.read_bytes()


def read_manifest(folder: str | os.PathLike[str], data: bytes | None = None) -> Manifest:
    """Parse ``manifest.json`` without checking the other files; ``data``: its bytes, read already
    (``signing.check_signature`` passes those it verified, so that no second read can differ)."""
    raw = read_manifest_bytes(folder) if data is None else data
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleFormatError(f"{str(Path(folder) / MANIFEST)!r} is not valid JSON: {e}") from e
    return Manifest.from_json(parsed)


def verify_bundle(folder: str | os.PathLike[str], manifest_bytes: bytes | None = None) -> Manifest:
    """Check the manifest and the size and sha256 of every file it lists.

    Returns the manifest when the bundle is sound; raises a :class:`BundleError`
    subclass naming the first problem otherwise. ``manifest_bytes``: parse these
    instead of reading ``manifest.json`` (the bytes a signature check verified).
    Files the manifest does not list (``manifest.sig``) are not looked at.
    """
    folder = Path(folder)
    m = read_manifest(folder, manifest_bytes)
    for required in (MODEL_FILE, TOKENIZER_FILE):
        if required not in m.files:
            raise BundleFormatError(f"manifest.json lists no checksum for {required}")
    _check_graphs(m)
    for name, entry in m.files.items():
        if Path(name).name != name:
            raise BundleFormatError(f"manifest.json names a file outside the bundle: {name!r}")
        path = folder / name
        if not path.is_file():
            raise BundleMissingFileError(f"bundle file {name!r} is missing from {str(folder)!r}")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise BundleChecksumError(
                f"bundle file {name!r} has {size} bytes, the manifest says {entry.get('bytes')}: "
                "it was changed after export"
            )
        if sha256_file(path) != entry.get("sha256"):
            raise BundleChecksumError(f"bundle file {name!r} does not match its sha256 in manifest.json: it was changed after export")
    return m


def _check_graphs(m: Manifest) -> None:
    """Every graph an int8 manifest lists is a file of the bundle or derived from one."""
    q = m.quantization or {}
    derived = q.get("derived") or {}
    for name in q.get("graphs") or {}:
        source = derived.get(name, {}).get("from") if isinstance(derived.get(name), dict) else None
        if name not in m.files and source not in m.files:
            raise BundleFormatError(f"manifest.json lists graph {name!r}, which is neither a file of the bundle "
                                    "nor derived from one")


def write_bundle(out: str | os.PathLike[str], manifest: Manifest, files: dict[str, Path], *, force: bool = False) -> Manifest:
    """Write a bundle atomically: build it in a temporary sibling folder, verify, rename.

    ``files`` maps bundle file names to existing paths (copied in). The manifest's
    ``files`` field is filled in here. An existing ``out`` is refused unless
    ``force``; with ``force`` it is replaced only once the new bundle is complete.
    """
    out = Path(out)
    with atomic_folder(out, force=force) as tmp:
        entries = {}
        for name, src in files.items():
            dst = tmp / name
            shutil.copyfile(src, dst)
            entries[name] = file_entry(dst)
        manifest = replace(manifest, files=entries)
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        verify_bundle(tmp)
    return manifest

