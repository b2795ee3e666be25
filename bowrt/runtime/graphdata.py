"""Where an ONNX graph file keeps its weights: inside it, or in data files beside it (ONNX
external data: each tensor names a ``location``, an ``offset`` and a ``length``).

An int8 bundle of bowrt >= 0.6 keeps its weights in ``model.onnx.data`` (bowrt/export/external.py),
which ONNX Runtime maps from the file. The runtime reads the graph file only to know which data
files it names (:func:`check_data_files`: each must be a file of the manifest, so verified), and
the twin derivation (runtime/twin.py) reads the tensors' bytes through :class:`DataFiles`.
Standard library only, like the rest of the runtime's graph handling (bowrt/protobuf.py).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bowrt.bundle import Manifest
from bowrt.errors import BundleFormatError
from bowrt.protobuf import LEN, fields, varints

# Field numbers from onnx/onnx.proto.
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER = 1, 5
T_DIMS, T_DATA_TYPE, T_INT32_DATA, T_NAME, T_RAW, T_EXTERNAL, T_LOCATION = 1, 2, 5, 8, 9, 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2  # StringStringEntryProto


def tensor(payload: memoryview) -> dict[str, Any]:
    """What bowrt reads of one TensorProto: name, type, dims, raw bytes, or where in a
    data file they are (``ext``: location, offset, length)."""
    t: dict[str, Any] = {"dims": [], "raw": None, "int32": None, "external": False, "ext": {}}
    for number, _, _, value in fields(payload):
        if number == T_NAME:
            t["name"] = bytes(value)
        elif number == T_DATA_TYPE:
            t["type"] = varints(value)[0]
        elif number == T_DIMS:
            t["dims"] += varints(value)  # packed or not
        elif number == T_RAW:
            t["raw"] = value  # a view: the weights are not copied to be looked at
        elif number == T_INT32_DATA:
            t["int32"] = (t["int32"] or []) + varints(value)
        elif number == T_EXTERNAL:
            entry = {k: bytes(v).decode("utf-8", "replace") for k, _, _, v in fields(value)}
            t["ext"][entry.get(_ENTRY_KEY, "")] = entry.get(_ENTRY_VALUE, "")
        elif number == T_LOCATION:
            t["external"] = varints(value)[0] == 1
    return t


# Reads an external tensor's bytes (a view of its data file) from its ``ext`` entries.
Reader = Callable[[dict[str, Any]], memoryview]


def no_data(t: dict[str, Any]) -> memoryview:
    raise BundleFormatError(f"tensor {t['name'].decode()!r} is stored in a data file ({t['ext'].get('location')!r}): "
                            "derive the twin from the graph file (write_u8), not from its bytes alone")


def map_file(path: Path) -> mmap.mmap | bytes:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""


def close_map(mapped: mmap.mmap | bytes) -> None:
    if isinstance(mapped, mmap.mmap):
        with contextlib.suppress(BufferError):  # a view still alive: the map goes with the last one
            mapped.close()


class DataFiles:
    """The data files a graph's external tensors name, each memory-mapped once: files beside
    the graph only (a plain name, as ONNX Runtime resolves it), every range inside its file."""

    def __init__(self, folder: Path):
        self.folder, self.maps = folder, {}

    def __call__(self, t: dict[str, Any]) -> memoryview:
        name, ext = t["name"].decode("utf-8", "replace"), t["ext"]
        loc = ext.get("location", "")
        if not loc or Path(loc).name != loc or loc in (".", ".."):
            raise BundleFormatError(f"tensor {name!r} names data file {loc!r}: only a file beside the graph is read")
        if loc not in self.maps:
            if not (self.folder / loc).is_file():
                raise BundleFormatError(f"tensor {name!r} is stored in {loc!r}, which is not beside the graph")
            self.maps[loc] = map_file(self.folder / loc)
        view = memoryview(self.maps[loc])
        try:
            offset = int(ext.get("offset", "0"))
            length = int(ext["length"]) if "length" in ext else len(view) - offset
        except ValueError as e:
            raise BundleFormatError(f"tensor {name!r} has a malformed external data entry: {e}") from e
        if offset < 0 or length < 0 or offset + length > len(view):
            raise BundleFormatError(f"tensor {name!r} runs past the end of {loc!r} ({offset} + {length} > {len(view)} bytes)")
        return view[offset:offset + length]

    def close(self) -> None:
        for mapped in self.maps.values():
            close_map(mapped)


def external_files(path: str | os.PathLike[str]) -> set[str]:
    """The data files the graph file ``path`` keeps initializers in (their ``location``s)."""
    mapped = map_file(Path(path))
    try:
        found = set()
        for number, wire, _, graph in fields(memoryview(mapped)):
            if number == MODEL_GRAPH and wire == LEN:
                for kind, _, _, payload in fields(graph):
                    if kind == GRAPH_INITIALIZER:
                        t = tensor(payload)
                        if t["external"]:
                            found.add(t["ext"].get("location", ""))
        return found
    finally:
        close_map(mapped)


def check_data_files(path: Path, manifest: Manifest) -> None:
    """Every data file the bundle graph at ``path`` reads its weights from is a file of the
    manifest (so verified with the bundle); else :class:`BundleFormatError`."""
    unlisted = sorted(f for f in external_files(path) if f not in manifest.files)
    if unlisted:
        raise BundleFormatError(f"graph {path.name!r} keeps weights in {', '.join(map(repr, unlisted))}, which "
                                "manifest.json does not list: they would run unverified")
