"""Append an L2 normalization to a bundle graph, by editing its protobuf bytes directly.

A bundle whose manifest says ``normalize: true`` (sentence-transformers models
with a Normalize module, e.g. all-MiniLM-L6-v2) returns unit vectors from the
Encoder, the server and ``bowrt encode``, which normalize after the graph. Triton
runs the graph alone, so the graph handed to Triton must end in the
normalization itself: the node producing the output is renamed to feed one
``LpNormalization(axis=1, p=2)`` node, which produces the output under its old
name (ONNX opset 1 and later; ONNX Runtime's CPU and CUDA kernels, TensorRT's
parser). Same inputs, same output name, shape and dtype.

Why bytes and not the ``onnx`` package: writing a Triton repository needs only the
standard library (the scale extra has no ``onnx``). An ONNX file is one
``ModelProto``; only the fields on the path to the output are parsed (the model's
``graph``, the graph's nodes and value infos); every other field, the weights
included, is copied through as it is.
"""

from __future__ import annotations

from bowrt.errors import BundleFormatError
from bowrt.protobuf import LEN as _LEN
from bowrt.protobuf import field as _field
from bowrt.protobuf import fields as _fields
from bowrt.protobuf import varint as _varint

# Field numbers from onnx/onnx.proto.
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_VALUE_INFO = 1, 13
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 3, 4, 5
_VALUE_INFO_NAME = 1
_ATTR_NAME, _ATTR_I, _ATTR_TYPE, _ATTR_INT = 1, 3, 20, 2
TAIL_NODE = "bowrt_l2_normalize"


def _rename(message: memoryview, fields: tuple[int, ...], old: bytes, new: bytes) -> tuple[bytes, bool]:
    """``message`` with every string field in ``fields`` equal to ``old`` set to ``new``."""
    parts, hit = [], False
    for number, wire, record, payload in _fields(message):
        if number in fields and wire == _LEN and payload == old:
            parts.append(_field(number, new))
            hit = True
        else:
            parts.append(bytes(record))
    return b"".join(parts), hit


def _int_attribute(name: str, value: int) -> bytes:
    return _field(_ATTR_NAME, name.encode()) + _varint(_ATTR_I << 3) + _varint(value) + \
        _varint(_ATTR_TYPE << 3) + _varint(_ATTR_INT)


def _tail_node(src: bytes, dst: bytes) -> bytes:
    return (_field(_NODE_INPUT, src) + _field(_NODE_OUTPUT, dst) + _field(_NODE_NAME, TAIL_NODE.encode())
            + _field(_NODE_OP_TYPE, b"LpNormalization")
            + _field(_NODE_ATTRIBUTE, _int_attribute("axis", 1)) + _field(_NODE_ATTRIBUTE, _int_attribute("p", 2)))


def _graph_with_tail(graph: memoryview, output: bytes, raw: bytes) -> bytes:
    parts, produced = [], False
    for number, _wire, record, payload in _fields(graph):
        if number == _GRAPH_NODE:
            node, hit = _rename(payload, (_NODE_INPUT, _NODE_OUTPUT), output, raw)
            produced |= hit
            parts.append(_field(_GRAPH_NODE, node) if hit else bytes(record))
        elif number == _GRAPH_VALUE_INFO:
            info, hit = _rename(payload, (_VALUE_INFO_NAME,), output, raw)
            parts.append(_field(_GRAPH_VALUE_INFO, info) if hit else bytes(record))
        else:
            parts.append(bytes(record))
    if not produced:
        raise BundleFormatError(f"no node of the graph produces its output {output.decode()!r}")
    # Repeated fields keep their wire order: the new node comes after every other, as ONNX's topological order wants.
    return b"".join(parts) + _field(_GRAPH_NODE, _tail_node(raw, output))


def append_l2_normalize(model: bytes, output: str) -> bytes:
    """The serialized ONNX ``model`` with its output ``output`` L2-normalized along axis 1."""
    out = output.encode()
    raw = out + b"_unnormalized"
    if raw in model:
        raise BundleFormatError(f"the graph already has a tensor named {raw.decode()!r}")
    parts, found = [], False
    for number, wire, record, payload in _fields(memoryview(model)):
        if number == _MODEL_GRAPH and wire == _LEN:
            parts.append(_field(_MODEL_GRAPH, _graph_with_tail(payload, out, raw)))
            found = True
        else:
            parts.append(bytes(record))
    if not found:
        raise BundleFormatError("the ONNX file has no graph")
    return b"".join(parts)


__all__ = ["TAIL_NODE", "append_l2_normalize"]
