"""A test-only TransferService serving one real file on a real port, with faults.

It is a real grpc.aio server over loopback (no mocks): it lets the client tests shape
a provider's behaviour, which the real peer would never do on purpose:

- ``corrupt_chunks``: flip a byte in these chunks (a lying source),
- ``stall_after``: stop sending (but keep the stream open) after this many bytes,
- ``fail_after``: abort the stream with UNAVAILABLE after this many bytes,
- ``delay``: sleep this long before each message (a slow source),
- ``bad_info``: lie in GetInfo (wrong hash for chunk 0),
- ``max_streams``: refuse a Download beyond this many at once (RESOURCE_EXHAUSTED),
- ``lie_consistently``: serve other bytes (every byte flipped) under the asked id, with a
  chunk list that matches those bytes: only the Merkle check of the id can catch it.

Run as a process (``python -m tests.pclient.provider FILE [--delay S]``) it prints its
port on one line, so a test can kill -9 it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from dht.identity import Identity
from kadcommon.merkle import CHUNK_SIZE, ChunkHasher, file_id_of_bytes, leaves_of_bytes
from protos import kadshare_pb2, kadshare_pb2_grpc
from pserver.grpcsec import ServerSecurity

MESSAGE_BYTES = 64 * 1024


@dataclass
class Behaviour:
    """Faults of a test provider (see module docstring)."""

    corrupt_chunks: set[int] = field(default_factory=set)
    stall_after: int | None = None
    fail_after: int | None = None
    delay: float = 0.0
    bad_info: bool = False
    lie_consistently: bool = False
    max_streams: int | None = None  # Download streams served at once; more: RESOURCE_EXHAUSTED


class FaultyProvider(kadshare_pb2_grpc.TransferServiceServicer):
    """Serves ``path`` under its Merkle file id; counts bytes sent; accepts uploads to a dir."""

    __test__ = False

    def __init__(
        self,
        path: Path,
        chunk_size: int = CHUNK_SIZE,
        behaviour: Behaviour | None = None,
        upload_dir: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.name = name or path.name  # announced in GetInfo (may be longer than disk allows)
        self.data = path.read_bytes()
        self.file_id = file_id_of_bytes(self.data)
        self.chunk_size = chunk_size
        self.behaviour = behaviour or Behaviour()
        if self.behaviour.lie_consistently:
            self.data = bytes(b ^ 0xFF for b in self.data)
        self.upload_dir = upload_dir
        self.bytes_sent = 0
        self.streams_now = 0  # Download streams being served
        self.most_streams = 0  # the most served at once
        self.refused_streams = 0
        self.server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def chunk_hashes(self) -> list[bytes]:
        return leaves_of_bytes(self.data)

    async def GetInfo(self, request, context):  # noqa: N802 - gRPC method name
        if request.file_id != self.file_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, "not shared here")
        hashes = self.chunk_hashes()
        if self.behaviour.bad_info:
            hashes[0] = bytes(32)
        return kadshare_pb2.FileInfo(
            file_id=self.file_id, name=self.name, size=len(self.data),
            chunk_size=self.chunk_size, chunk_hashes=hashes,
        )

    async def Download(self, request, context) -> AsyncIterator[kadshare_pb2.Chunk]:  # noqa: N802
        if request.file_id != self.file_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, "not shared here")
        b = self.behaviour
        if b.max_streams is not None and self.streams_now >= b.max_streams:
            self.refused_streams += 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"serving at most {b.max_streams} streams; retry in 1 s")
        self.streams_now += 1
        self.most_streams = max(self.most_streams, self.streams_now)
        try:
            async for chunk in self._send(request, context):
                yield chunk
        finally:
            self.streams_now -= 1

    async def _send(self, request, context) -> AsyncIterator[kadshare_pb2.Chunk]:
        b = self.behaviour
        end = len(self.data) if request.length == 0 else request.offset + request.length
        end = min(end, len(self.data))
        pos = request.offset
        while pos < end:
            if b.delay:
                await asyncio.sleep(b.delay)
            if b.stall_after is not None and self.bytes_sent >= b.stall_after:
                await asyncio.sleep(3600)
            if b.fail_after is not None and self.bytes_sent >= b.fail_after:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "provider going away")
            piece = bytearray(self.data[pos : min(end, pos + MESSAGE_BYTES)])
            first = pos // self.chunk_size
            last = (pos + len(piece) - 1) // self.chunk_size
            for index in range(first, last + 1):
                if index in b.corrupt_chunks:
                    at = max(index * self.chunk_size, pos) - pos
                    piece[at] ^= 0xFF
            self.bytes_sent += len(piece)
            yield kadshare_pb2.Chunk(offset=pos, data=bytes(piece))
            pos += len(piece)

    async def Upload(self, request_iterator, context):  # noqa: N802
        if self.upload_dir is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "uploads are off")
        header = None
        digest = ChunkHasher()
        parts: list[bytes] = []
        async for msg in request_iterator:
            if header is None:
                header = msg.header
                continue
            digest.update(msg.data)
            parts.append(msg.data)
        assert header is not None
        if digest.finish() != header.file_id:
            await context.abort(grpc.StatusCode.DATA_LOSS, "content does not match file_id")
        data = b"".join(parts)
        (self.upload_dir / header.name).write_bytes(data)
        return kadshare_pb2.UploadReply(file_id=header.file_id, name=header.name, size=len(data))

    async def start(self) -> FaultyProvider:
        self.server = grpc.aio.server()
        kadshare_pb2_grpc.add_TransferServiceServicer_to_server(self, self.server)
        ident = Identity.generate()  # served over TLS like a real peer
        self.node_id = ident.node_id_hex
        security = ServerSecurity.create(ident.public_key, ident.sign, ident.node_id_hex)
        self.port = security.add_port(self.server, "127.0.0.1:0")
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)


async def _serve(args: argparse.Namespace) -> None:
    provider = FaultyProvider(Path(args.file), chunk_size=args.chunk_size,
                            behaviour=Behaviour(delay=args.delay))
    await provider.start()
    print(provider.port, flush=True)
    await provider.server.wait_for_termination()  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
