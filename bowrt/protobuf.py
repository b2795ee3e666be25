"""The few protobuf wire-format helpers bowrt needs to read and edit ONNX files with the
standard library only (the runtime and the Triton writer do not depend on ``onnx``).

An ONNX file is one ``ModelProto``. Callers walk only the messages on their path
(:func:`fields`) and copy every other record through byte for byte, so a large graph
is never decoded as a whole.
"""

from __future__ import annotations

from collections.abc import Iterator

from bowrt.errors import BundleFormatError

LEN = 2  # wire type: length-delimited
VARINT = 0


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleFormatError("the ONNX graph is truncated (a varint runs past the end)")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview, memoryview]]:
    """(field number, wire type, the whole record, its payload) for each field of one
    message; a varint field's payload is its encoded value."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = read_varint(buf, pos)
        wire = key & 7
        if wire == VARINT:
            _, end = read_varint(buf, pos)
        elif wire == 1:
            end = pos + 8
        elif wire == 5:
            end = pos + 4
        elif wire == LEN:
            size, pos = read_varint(buf, pos)
            end = pos + size
        else:
            raise BundleFormatError(f"the ONNX graph uses protobuf wire type {wire}, which no ONNX field has")
        if end > len(buf):
            raise BundleFormatError("the ONNX graph is truncated (a field runs past the end)")
        yield key >> 3, wire, buf[start:end], buf[pos:end]
        pos = end


def field(number: int, payload: bytes | int) -> bytes:
    """One field: a varint (int) or length-delimited (bytes)."""
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


def varints(payload: memoryview) -> list[int]:
    """The values of a packed repeated varint field."""
    out, pos = [], 0
    while pos < len(payload):
        value, pos = read_varint(payload, pos)
        out.append(value)
    return out
