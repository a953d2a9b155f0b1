"""The file description (GetInfo): fetched from providers, verified against the file id.

A description is used only if its size and chunk leaves hash to the Merkle file id
(``kadcommon.merkle``), so a provider that lies is dropped before any byte is fetched.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import grpc

from kadcommon.merkle import CHUNK_SIZE, leaves_match
from pclient.errors import TransferFailed
from pclient.grpcutil import Dialer, describe_rpc_error
from protos import kadshare_pb2, kadshare_pb2_grpc

log = logging.getLogger(__name__)

INFO_BATCH = 3  # providers asked for GetInfo at once (the first verified answer is used)


def pick_name(names: list[str]) -> str:
    """The name most providers announce; ties go to the smallest, so every run agrees."""
    counts = Counter(n for n in names if n)
    if not counts:
        return ""
    return min(counts, key=lambda n: (-counts[n], n))


def _validate_info(info: kadshare_pb2.FileInfo, file_id: str) -> str | None:
    """Why this FileInfo cannot be used, or None if it is consistent."""
    if info.file_id.lower() != file_id:
        return "answered GetInfo for a different file"
    if info.chunk_size != CHUNK_SIZE:
        return f"sent a chunk size of {info.chunk_size} bytes, not the protocol's {CHUNK_SIZE}"
    expected = -(-info.size // info.chunk_size)
    if len(info.chunk_hashes) != expected:
        return f"sent {len(info.chunk_hashes)} chunk hashes for {expected} chunks"
    if any(len(h) != 32 for h in info.chunk_hashes):
        return "sent a chunk hash that is not 32 bytes"
    if not leaves_match(file_id, info.size, info.chunk_hashes):
        return "sent a chunk list (or size) that does not hash to the file id"
    return None


async def _get_info(
    address: str, file_id: str, timeout: float, dialer: Dialer
) -> tuple[kadshare_pb2.FileInfo | None, str]:
    """One GetInfo call: (info, "") or (None, reason)."""
    channel, why = await dialer.try_open(address)
    if channel is None:
        log.info("provider %s: %s", address, why)
        return None, why
    try:
        stub = kadshare_pb2_grpc.TransferServiceStub(channel)
        info = await stub.GetInfo(kadshare_pb2.InfoRequest(file_id=file_id), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        log.info("provider %s: GetInfo failed: %s", address, describe_rpc_error(exc))
        return None, describe_rpc_error(exc)
    finally:
        await channel.close()
    problem = _validate_info(info, file_id)
    return (None, problem) if problem else (info, "")


async def fetch_info(
    file_id: str, providers: list[str], timeout: float, dialer: Dialer | None = None,
    batch: int = INFO_BATCH,
) -> tuple[kadshare_pb2.FileInfo, str, dict[str, str]]:
    """The file's chunk list, from the first providers whose list hashes to ``file_id``.

    Up to ``batch`` providers are asked at once (one slow or dead provider costs no
    time); every answer is checked against the id, so a provider that lies is dropped
    here, before a byte is fetched from it, and no vote among providers is needed.
    Returns the info, a provider that gave it and the reasons others were dropped; the
    info's ``name`` is the one most of the verified answers gave (``pick_name``), so
    the saved name does not depend on who answered first.
    """
    dialer = dialer or Dialer()
    reasons: dict[str, str] = {}
    answers: list[tuple[str, kadshare_pb2.FileInfo]] = []
    queue = list(providers)
    while queue and not answers:
        now, queue = queue[:batch], queue[batch:]
        results = await asyncio.gather(*(_get_info(a, file_id, timeout, dialer) for a in now))
        for address, (info, why) in zip(now, results, strict=True):
            if info is None:
                reasons[address] = why
            else:
                answers.append((address, info))
    if not answers:
        raise TransferFailed("no provider could describe the file", reasons)
    chosen, first = answers[0]
    info = kadshare_pb2.FileInfo()
    info.CopyFrom(first)
    info.name = pick_name([a.name for _addr, a in answers])
    return info, chosen, reasons
