"""The u8 x u8 twin of an int8 graph, derived in memory from the bundle's one graph.

Where ONNX Runtime's u8 x s8 kernel adds products in saturating int16 pairs (AVX2,
AVX-512 without VNNI: ``bowrt/export/int8/isa.py``), an int8 bundle runs the same
integers as u8 x u8: every int8 GEMM weight w stored as the uint8 w + 128, with a weight
zero point of z + 128. In two's complement, w + 128 as a byte is ``w XOR 0x80``, so the
twin is the bundle graph with those initializers' bytes flipped and their type set to
uint8, and one new zero-point initializer per GEMM (a graph that keeps its weights in a
data file, ``model.onnx.data``, bowrt >= 0.6, gets a twin that holds them inline: one
self-contained graph, read from the bundle's two verified files). A bundle exported by bowrt >= 0.4
ships one graph and names the twin in ``quantization.derived``: what it is derived
from, the transform, and the sha256 of the bytes the export derived. :func:`open_graph`
derives it here, streaming it into a scratch file that ONNX Runtime opens (an anonymous
memory file on Linux), and refuses bytes that differ from that sha256 (:func:`graph_source`
gives the same bytes in memory, for tools and tests). Bundles from before
ship the twin as a file (``model.u8.onnx``) and keep loading from it.

Standard library only, like the rest of the runtime's graph handling (bowrt/protobuf.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bowrt.bundle import Manifest
from bowrt.errors import BundleChecksumError, BundleFormatError
from bowrt.protobuf import LEN, field, fields, varint
from bowrt.runtime.graphdata import (
    GRAPH_INITIALIZER,
    GRAPH_NODE,
    MODEL_GRAPH,
    T_DATA_TYPE,
    T_DIMS,
    T_EXTERNAL,
    T_LOCATION,
    T_NAME,
    T_RAW,
    DataFiles,
    Reader,
    check_data_files,
    close_map,
    map_file,
    no_data,
    tensor,
)

# The transform's name in the manifest. Its bytes are part of the contract: a change to
# what derive_u8 writes needs a new name (the sha256 in old manifests pins the old one).
# "u8-weights/2" is the same derivation for graphs that hold a QAttention (the speed profile,
# bowrt >= 0.5): a runtime that knows only /1 would leave its weights alone, so such a graph is
# named /2 and an older bowrt asks for an upgrade instead of failing the twin's sha256.
# "u8-weights/3" is /2 for a graph with weights in a data file (bowrt >= 0.6), which the twin
# takes inline; a bowrt that knows only /1 and /2 cannot read them, so it asks for an upgrade.
U8_TRANSFORM = "u8-weights/1"
U8_TRANSFORMS = ("u8-weights/1", "u8-weights/2", "u8-weights/3")

INTEGER_GEMMS = (b"MatMulInteger", b"MatMulIntegerToFloat", b"DynamicQuantizeMatMul", b"QAttention")
# Where each takes its weight zero point (MatMulInteger: A, B, a_zp, b_zp; MatMulIntegerToFloat:
# A, B, a_scale, b_scale, a_zp, b_zp, bias; DynamicQuantizeMatMul: A, B, b_scale, b_zp, bias;
# QAttention: input, weight, bias, input_scale, weight_scale, mask_index, input_zp, weight_zp, past).
B_ZERO_POINT = {b"MatMulInteger": 3, b"MatMulIntegerToFloat": 5, b"DynamicQuantizeMatMul": 3, b"QAttention": 7}
# MatMulIntegerToFloat takes a per-column weight zero point when its weight scale is per column.
PER_COLUMN_ZP = (b"MatMulIntegerToFloat",)

# Field numbers from onnx/onnx.proto.
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE = 1, 2, 3, 4
_UINT8, _INT8 = 2, 3
_FLIP = bytes(b ^ 0x80 for b in range(256))


def _raw(t: dict[str, Any], read: Reader) -> memoryview | bytes | None:
    """The tensor's raw bytes: inside the graph, or read from its data file."""
    return read(t) if t["external"] else t["raw"]


def _int8_bytes(t: dict[str, Any], read: Reader) -> bytes:
    """The tensor's int8 values as raw bytes (ONNX stores them raw, as int32_data, or in a data file)."""
    raw = _raw(t, read)
    if raw is not None:
        return bytes(raw)
    return bytes(v & 0xFF for v in t["int32"] or [])  # two's complement: the low byte


def _u8tensor(name: bytes, dims: list[int], data: bytes) -> bytes:
    return (b"".join(field(T_DIMS, d) for d in dims) + field(T_DATA_TYPE, _UINT8)
            + field(T_NAME, name) + field(T_RAW, data))


def _node(payload: memoryview) -> dict[str, Any]:
    n: dict[str, Any] = {"inputs": [], "outputs": [], "name": b"", "op": b""}
    for number, _, _, value in fields(payload):
        if number == _NODE_INPUT:
            n["inputs"].append(bytes(value))
        elif number == _NODE_OUTPUT:
            n["outputs"].append(bytes(value))
        elif number == _NODE_NAME:
            n["name"] = bytes(value)
        elif number == _NODE_OP_TYPE:
            n["op"] = bytes(value)
    return n


def _with_inputs(payload: memoryview, inputs: list[bytes]) -> bytes:
    """The NodeProto with its input list replaced (inputs first; every other field as it was)."""
    rest = [bytes(record) for number, _, record, _ in fields(payload) if number != _NODE_INPUT]
    return b"".join(field(_NODE_INPUT, i) for i in inputs) + b"".join(rest)


def _plan(graph: memoryview, read: Reader) -> tuple[dict[bytes, dict[str, Any]], dict[int, tuple[int, bytes, bytes]],
                                                   set[bytes]]:
    """The int8 GEMM weights to flip (name -> tensor), each GEMM node's new zero point
    (node index -> (slot, new initializer name, that initializer)), and the old zero points no
    node uses any more."""
    inits, nodes = {}, []
    for number, _, _, payload in fields(graph):
        if number == GRAPH_INITIALIZER:
            t = tensor(payload)
            inits[t["name"]] = t
        elif number == GRAPH_NODE:
            nodes.append(_node(payload))
    weights: dict[bytes, dict[str, Any]] = {}
    zps: dict[int, tuple[int, bytes, bytes]] = {}
    old_zps: set[bytes] = set()
    for i, n in enumerate(nodes):
        w = inits.get(n["inputs"][1]) if n["op"] in INTEGER_GEMMS and len(n["inputs"]) > 1 else None
        if w is None or w.get("type") != _INT8:
            continue
        weights[w["name"]] = w
        slot = B_ZERO_POINT[n["op"]]
        old = n["inputs"][slot] if len(n["inputs"]) > slot else b""
        zp = _int8_bytes(inits[old], read) if old else b"\x00"
        cols = w["dims"][-1]
        if len(zp) == 1 and n["op"] in PER_COLUMN_ZP:
            zp = zp * cols
        new = (n["name"] or n["outputs"][0]) + b"/b_zp_u8"
        zps[i] = (slot, new, _u8tensor(new, [cols] if len(zp) > 1 else [], zp.translate(_FLIP)))
        if old:
            old_zps.add(old)
    for i, n in enumerate(nodes):  # a flipped weight must feed nothing but GEMM weight slots
        for slot, name in enumerate(n["inputs"]):
            if name in weights and not (slot == 1 and n["op"] in INTEGER_GEMMS):
                raise BundleFormatError(f"int8 weight {name.decode()!r} also feeds {n['op'].decode()} "
                                        f"input {slot}: the u8 twin cannot be derived")
    still_used = {name for i, n in enumerate(nodes) for s, name in enumerate(n["inputs"])
                  if not (i in zps and s == zps[i][0])}
    return weights, zps, old_zps - still_used


# A piece of the derived graph: bytes, a view of the source, or (header, bytes, flip?): a
# tensor's record up to its raw bytes, then those bytes (a view of the source or its data
# file), XOR 0x80 where ``flip``.
Part = Any


def _size(part: Part) -> int:
    return len(part[0]) + len(part[1]) if isinstance(part, tuple) else len(part)


def _flipped_weight(t: dict[str, Any], read: Reader) -> tuple[bytes, Any, bool]:
    """The uint8 twin of int8 weight ``t`` as (its record up to the raw bytes, the int8 bytes to flip, True)."""
    raw = _raw(t, read)
    data = raw if raw is not None else _int8_bytes(t, read)
    head = (b"".join(field(T_DIMS, d) for d in t["dims"]) + field(T_DATA_TYPE, _UINT8) + field(T_NAME, t["name"])
            + varint(T_RAW << 3 | LEN) + varint(len(data)))
    return varint(GRAPH_INITIALIZER << 3 | LEN) + varint(len(head) + len(data)) + head, data, True


def _inlined(payload: memoryview, t: dict[str, Any], read: Reader) -> tuple[bytes, Any, bool]:
    """An initializer kept in a data file, as a record with its bytes inside: every field as it
    was but the data file's (external_data, data_location), then raw_data."""
    data = read(t)
    rest = b"".join(bytes(r) for n, _, r, _ in fields(payload) if n not in (T_EXTERNAL, T_LOCATION, T_RAW))
    head = rest + varint(T_RAW << 3 | LEN) + varint(len(data))
    return varint(GRAPH_INITIALIZER << 3 | LEN) + varint(len(head) + len(data)) + head, data, False


def _graph_parts(graph: memoryview, read: Reader) -> tuple[list[Part], int]:
    weights, zps, dropped = _plan(graph, read)
    parts: list[Part] = []
    index = 0
    for number, _, record, payload in fields(graph):
        if number == GRAPH_NODE:
            if index in zps:
                slot, new, _ = zps[index]
                inputs = _node(payload)["inputs"]
                inputs += [b""] * (slot + 1 - len(inputs))
                inputs[slot] = new
                parts.append(field(GRAPH_NODE, _with_inputs(payload, inputs)))
            else:
                parts.append(record)
            index += 1
        elif number == GRAPH_INITIALIZER:
            t = tensor(payload)
            if t["name"] in weights:
                parts.append(_flipped_weight(t, read))
            elif t["name"] in dropped:
                pass
            elif t["external"]:
                parts.append(_inlined(payload, t, read))
            else:
                parts.append(record)
        else:
            parts.append(record)
    parts += [field(GRAPH_INITIALIZER, tensor) for _, _, tensor in zps.values()]
    return parts, len(zps)


def _model_parts(model: memoryview, read: Reader = no_data) -> list[Part]:
    parts: list[Part] = []
    gemms = 0
    for number, wire, record, payload in fields(model):
        if number == MODEL_GRAPH and wire == LEN:
            graph, gemms = _graph_parts(payload, read)
            parts.append(varint(MODEL_GRAPH << 3 | LEN) + varint(sum(_size(p) for p in graph)))
            parts += graph
        else:
            parts.append(record)
    if not gemms:
        raise BundleFormatError("the graph has no integer GEMM with int8 weights: there is no u8 twin to derive")
    return parts


def _chunks(parts: list[Part]) -> Iterator[bytes | memoryview]:
    """The derived graph's bytes, one piece at a time: a flipped weight is made when it is written."""
    for part in parts:
        if isinstance(part, tuple):
            head, data, flip = part
            yield head
            yield bytes(data).translate(_FLIP) if flip else data
        else:
            yield part


def derive_u8(model: bytes) -> bytes:
    """The serialized u8 x u8 twin of the serialized int8 ``model``: the same integer
    products, exact on every CPU. Raises :class:`BundleFormatError` for a graph it cannot
    derive (no int8 GEMM weight, a weight that also feeds another operator, weights in a
    data file: :func:`write_u8` reads those)."""
    return b"".join(_chunks(_model_parts(memoryview(model))))


def write_u8(source: str | os.PathLike[str], out: BinaryIO) -> tuple[str, int]:
    """Stream the twin of the graph file ``source`` into ``out``; returns its sha256 and size.
    The source and its data file (where its weights are in one) are memory-mapped and the
    twin written a weight at a time, so no copy of either graph is held in memory."""
    mapped, data = map_file(Path(source)), DataFiles(Path(source).parent)
    try:
        return _write(memoryview(mapped), out, data)
    finally:
        data.close()
        close_map(mapped)


def _write(view: memoryview, out: BinaryIO, read: Reader = no_data) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for chunk in _chunks(_model_parts(view, read)):
        h.update(chunk)
        out.write(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def transform_of(model: bytes) -> str:
    """The transform name the export records for the twin of the serialized ``model``
    (:data:`U8_TRANSFORMS`: /2 where a QAttention's weights are flipped too, /3 where the
    graph keeps weights in a data file)."""
    attention = False
    for number, wire, _, graph in fields(memoryview(model)):
        if number == MODEL_GRAPH and wire == LEN:
            for kind, _, _, payload in fields(graph):
                if kind == GRAPH_INITIALIZER and tensor(payload)["external"]:
                    return U8_TRANSFORMS[2]
                attention = attention or (kind == GRAPH_NODE and _node(payload)["op"] == b"QAttention")
    return U8_TRANSFORMS[1] if attention else U8_TRANSFORMS[0]


def derived(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """The bundle's derived graphs: name -> {from, transform, sha256, bytes}."""
    table = (manifest.quantization or {}).get("derived") or {}
    return table if isinstance(table, dict) else {}


def _spec(folder: Path, manifest: Manifest, name: str) -> dict[str, Any]:
    """The derivation of graph ``name``, once its source and the data files the source reads
    (which the twin inlines) are known to be files of the manifest."""
    spec = derived(manifest).get(name)
    if not isinstance(spec, dict) or spec.get("from") not in manifest.files:
        raise BundleFormatError(f"the bundle has no graph {name!r}: it is neither a file of the manifest nor derived from one")
    if spec.get("transform") not in U8_TRANSFORMS:
        raise BundleFormatError(f"graph {name!r} is derived by {spec.get('transform')!r}, which this bowrt does not "
                                f"know (it knows {', '.join(map(repr, U8_TRANSFORMS))}): upgrade bowrt")
    check_data_files(folder / spec["from"], manifest)
    return spec


def _check(name: str, spec: dict[str, Any], sha: str) -> None:
    if sha != spec.get("sha256"):
        raise BundleChecksumError(f"graph {name!r}, derived here from {spec['from']!r}, does not match the sha256 "
                                  "the export recorded for it: the bundle or this bowrt computes another twin")


@contextlib.contextmanager
def _scratch() -> Iterator[tuple[BinaryIO, str]]:
    """A file only this process sees, and a path ONNX Runtime can open it by: an anonymous
    memory file on Linux (never on disk), else a temporary file removed afterwards."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        with os.fdopen(os.memfd_create("bowrt-u8-twin"), "w+b") as f:
            yield f, f"/proc/self/fd/{f.fileno()}"
        return
    with tempfile.TemporaryDirectory(prefix="bowrt-twin-") as tmp:
        path = os.path.join(tmp, "model.u8.onnx")
        with open(path, "w+b") as f:
            yield f, path


@contextlib.contextmanager
def open_graph(bundle_dir: str | os.PathLike[str], manifest: Manifest, name: str) -> Iterator[str]:
    """A path to the bundle graph ``name`` while the context lasts: a file of the bundle (its
    sha256 verified with the bundle), or the derived graph written to a scratch file and
    checked against the sha256 the export recorded for it."""
    folder = Path(bundle_dir)
    if name in manifest.files:
        check_data_files(folder / name, manifest)
        yield str(folder / name)
        return
    spec = _spec(folder, manifest, name)
    with _scratch() as (f, path):
        sha, _ = write_u8(folder / spec["from"], f)
        f.flush()
        _check(name, spec, sha)
        yield path


def graph_source(bundle_dir: str | os.PathLike[str], manifest: Manifest, name: str) -> Path | bytes:
    """The bundle graph ``name``: a file's path, or a derived graph's bytes (checked as in :func:`open_graph`)."""
    folder = Path(bundle_dir)
    if name in manifest.files:
        return folder / name
    spec = _spec(folder, manifest, name)
    buf = io.BytesIO()
    sha, _ = write_u8(folder / spec["from"], buf)
    _check(name, spec, sha)
    return buf.getvalue()
