"""Shared helpers of the pserver tests: content generation and gRPC upload/download."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import grpc

from kadcommon.merkle import file_id_of_bytes
from pclient.grpcutil import verified_credentials
from protos import kadshare_pb2, kadshare_pb2_grpc

RPC_TIMEOUT = 30.0


def content(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return file_id_of_bytes(data)


async def download(
    stub: kadshare_pb2_grpc.TransferServiceStub, file_id: str, offset: int = 0, length: int = 0
) -> bytes:
    """All bytes of one ranged Download, checking that message offsets are contiguous."""
    out = bytearray()
    call = stub.Download(
        kadshare_pb2.DownloadRequest(file_id=file_id, offset=offset, length=length),
        timeout=RPC_TIMEOUT,
    )
    async for chunk in call:
        assert chunk.offset == offset + len(out)
        assert len(chunk.data) <= 1024 * 1024
        out += chunk.data
    return bytes(out)


#: The upload token of the test peers built from a bare servicer (``test_transfer.Peer``).
TEST_TOKEN = "test-upload-token"


async def upload(
    stub: kadshare_pb2_grpc.TransferServiceStub,
    name: str,
    data: bytes,
    declared_id: str | None = None,
    declared_size: int | None = None,
    piece: int = 256 * 1024,
    token: str | None = TEST_TOKEN,
) -> kadshare_pb2.UploadReply:
    """Upload ``data`` under ``name``; the declared id/size default to the true ones."""

    async def messages() -> AsyncIterator[kadshare_pb2.UploadMessage]:
        header = kadshare_pb2.UploadHeader(
            name=name,
            size=len(data) if declared_size is None else declared_size,
            file_id=sha(data) if declared_id is None else declared_id,
        )
        yield kadshare_pb2.UploadMessage(header=header)
        for pos in range(0, len(data), piece):
            yield kadshare_pb2.UploadMessage(data=data[pos : pos + piece])

    metadata = (("authorization", f"Bearer {token}"),) if token else None
    return await stub.Upload(messages(), timeout=RPC_TIMEOUT, metadata=metadata)


def channel(address: str) -> grpc.aio.Channel:
    """A TLS channel to a node, trusting the certificate bound to its identity."""
    creds, options = verified_credentials(address)
    return grpc.aio.secure_channel(address, creds, options=options)
