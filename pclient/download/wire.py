"""Decoding ``Chunk`` messages of a ``Download`` stream without copying their payload.

The generated stub copies each payload twice (into the message, then out of it as
``bytes``). Asking grpc for the raw message bytes and reading the two fields by hand
yields the payload as a memoryview of those bytes, which is hashed and written as is.
Unknown fields are skipped as protobuf requires, so a newer peer's extra fields pass.
"""

from __future__ import annotations

DOWNLOAD_METHOD = "/kadshare.v1.TransferService/Download"


class WireError(ValueError):
    """The bytes are not a well-formed ``Chunk`` message."""


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    end = len(view)
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def decode_chunk(raw: bytes) -> tuple[int, memoryview]:
    """(offset, data) of a serialized ``Chunk``; ``data`` is a view into ``raw``."""
    view = memoryview(raw)
    pos, offset, data = 0, 0, view[:0]
    end = len(view)
    while pos < end:
        key, pos = _varint(view, pos)
        field, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _varint(view, pos)
            if field == 1:
                offset = value
        elif kind == 2:
            length, pos = _varint(view, pos)
            if pos + length > end:
                raise WireError("field runs past the end of the message")
            if field == 2:
                data = view[pos : pos + length]
            pos += length
        elif kind == 1:
            pos += 8
        elif kind == 5:
            pos += 4
        else:
            raise WireError(f"unsupported wire type {kind}")
        if pos > end:
            raise WireError("field runs past the end of the message")
    return offset, data
