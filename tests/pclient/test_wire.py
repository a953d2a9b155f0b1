"""Hand decoding of ``Chunk`` messages (pclient/download/wire.py) against protobuf's own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pclient.download.wire import WireError, decode_chunk
from protos import kadshare_pb2


@given(offset=st.integers(min_value=0, max_value=2**64 - 1), data=st.binary(max_size=4096))
def test_decodes_what_protobuf_encodes(offset: int, data: bytes) -> None:
    raw = kadshare_pb2.Chunk(offset=offset, data=data).SerializeToString()
    at, view = decode_chunk(raw)
    assert at == offset
    assert bytes(view) == data


def test_payload_is_a_view_of_the_message_not_a_copy() -> None:
    raw = kadshare_pb2.Chunk(offset=5, data=b"x" * 1000).SerializeToString()
    _, view = decode_chunk(raw)
    assert isinstance(view, memoryview) and view.obj is raw


def test_unknown_fields_of_a_newer_peer_are_skipped() -> None:
    known = kadshare_pb2.Chunk(offset=7, data=b"abc").SerializeToString()
    extra = (b"\x18\x96\x01"          # field 3, varint 150
             + b"\x22\x02hi"          # field 4, 2 bytes
             + b"\x29" + bytes(8)     # field 5, fixed64
             + b"\x35" + bytes(4))    # field 6, fixed32
    assert decode_chunk(extra + known)[0] == 7
    at, view = decode_chunk(known + extra)
    assert (at, bytes(view)) == (7, b"abc")


@pytest.mark.parametrize("raw", [
    b"\x08",                     # offset varint cut off
    b"\x12\x05abc",              # data shorter than its length
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # varint over 64 bits
    b"\x0b",                     # group start: not in proto3
    b"\x29\x00",                 # fixed64 cut off
])
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(WireError):
        decode_chunk(raw)
