"""Wire framing of TransferService: pre-serialized ``Chunk`` messages and status codes.

Downloads read with ``pread`` one message at a time, straight into the buffer that is
sent, so grpc's flow control paces a slow reader and no file is ever held in memory.
"""

from __future__ import annotations

import asyncio
import errno
import os

import grpc

from protos import kadshare_pb2
from pserver.errors import FileNotShared, InvalidFileId, PeerError, RangeError, UploadRefused

SERVICE_NAME = kadshare_pb2.DESCRIPTOR.services_by_name["TransferService"].full_name

_UPLOAD_CODES = {
    UploadRefused.NOT_ACCEPTING: grpc.StatusCode.PERMISSION_DENIED,
    UploadRefused.NO_TOKEN: grpc.StatusCode.UNAUTHENTICATED,
    UploadRefused.BAD_TOKEN: grpc.StatusCode.PERMISSION_DENIED,
    UploadRefused.BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UploadRefused.BAD_NAME: grpc.StatusCode.INVALID_ARGUMENT,
    UploadRefused.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UploadRefused.BAD_HASH: grpc.StatusCode.INVALID_ARGUMENT,
    UploadRefused.BAD_STREAM: grpc.StatusCode.INVALID_ARGUMENT,
    UploadRefused.EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    UploadRefused.STALLED: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_for(exc: PeerError) -> grpc.StatusCode:
    """The gRPC status code a peer error maps to (never UNKNOWN)."""
    if isinstance(exc, FileNotShared):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, InvalidFileId):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, RangeError):
        return grpc.StatusCode.OUT_OF_RANGE
    if isinstance(exc, UploadRefused):
        return _UPLOAD_CODES.get(exc.reason, grpc.StatusCode.INVALID_ARGUMENT)
    return grpc.StatusCode.FAILED_PRECONDITION


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def chunk_header(offset: int, length: int) -> bytes:
    """Protobuf wire bytes of ``Chunk`` up to the payload (offset 0 is omitted, as proto3 does)."""
    head = b"\x08" + _varint(offset) if offset else b""
    return head + b"\x12" + _varint(length)


_NOWAIT_FLAG = getattr(os, "RWF_NOWAIT", 0)
_nowait_works = bool(_NOWAIT_FLAG)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` (worker thread); returns the bytes read (short at EOF)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


async def read_chunk_message(fd: int, offset: int, length: int) -> bytes | None:
    """A serialized ``Chunk{offset, data}`` read straight from the file, or None if short.

    Why not ``kadshare_pb2.Chunk(...).SerializeToString()``: that copies the payload twice
    more (into the message, then out of it); building the two-field wire format around a
    ``preadv`` into one buffer costs a single copy. The bytes are exactly what protobuf
    would produce, so any client decodes them with ``Chunk.FromString``.

    Bytes already in the page cache are read on the loop (``RWF_NOWAIT`` never blocks);
    whatever would wait for the disk is read in a worker thread, so a cold file or a slow
    disk never stalls the loop.
    """
    global _nowait_works
    header = chunk_header(offset, length)
    buf = bytearray(len(header) + length)
    buf[: len(header)] = header
    view = memoryview(buf)[len(header) :]
    got = 0
    if _nowait_works:
        try:
            got = os.preadv(fd, [view], offset, _NOWAIT_FLAG)
        except BlockingIOError:
            got = 0
        except OSError as exc:  # a filesystem or kernel without RWF_NOWAIT
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            _nowait_works = False
            got = 0
    if got < length:
        got += await asyncio.to_thread(_pread_into, fd, view[got:], offset + got)
    if got != length:
        return None
    return bytes(buf)

