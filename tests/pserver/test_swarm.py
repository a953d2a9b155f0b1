"""Swarming end to end (issue 12 item 3): downloads that fetch from full and partial
providers, and a small flash crowd. Real in-process nodes on 127.0.0.1, real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from kadcommon.merkle import CHUNK_SIZE, file_id_of_path
from pclient.client import Client
from pclient.download import DownloadConfig, download_file
from tests.pserver.conftest import Peers, eventually, rest_url
from tests.pserver.helpers import content, sha
from tests.pserver.test_partial import DATA, FILE_ID, grpc_address, register, write_part

CONFIG = DownloadConfig(sources=4, stall_timeout=10.0, info_timeout=5.0)


async def test_a_download_from_a_full_and_a_partial_provider_completes_verified(
    peers: Peers, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    seeder = await peers.start({"movie.bin": DATA}, max_upload_rate=4 * CHUNK_SIZE)
    partial = await peers.start()
    part, leaves = write_part(tmp_path / "half", range(5))  # chunks 0-4 of 8
    await register(http, partial, part, leaves, claimed=list(range(5)))

    sources = [grpc_address(seeder), grpc_address(partial)]
    result = await download_file(FILE_ID, tmp_path / "out", sources, config=CONFIG)
    assert await asyncio.to_thread(file_id_of_path, result.path) == FILE_ID
    assert result.path.read_bytes() == DATA
    assert result.dropped == {}  # refusals of chunks it lacks do not drop the source
    assert result.sources.get(grpc_address(partial), 0) > 0
    assert result.sources.get(grpc_address(partial), 0) <= 5 * CHUNK_SIZE
    assert sum(result.sources.values()) == len(DATA)


async def test_a_small_flash_crowd_completes_with_every_file_verified(
    peers: Peers, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    data = content(12 * CHUNK_SIZE, seed=44)
    file_id = sha(data)
    seeder = await peers.start({"crowd.bin": data}, max_upload_rate=4 * CHUNK_SIZE)
    crowd = [await peers.start(join=seeder) for _ in range(3)]

    async def announced() -> bool:
        reply = await http.get(rest_url(crowd[-1]) + f"/providers/{file_id}")
        return reply.status_code == 200 and bool(reply.json()["providers"])

    await eventually(announced)

    async def one(i: int, node: object) -> tuple[Path, dict[str, int]]:
        async with Client(rest_url(node), token=node.token) as client:  # type: ignore[attr-defined]
            result = await client.download(file_id, tmp_path / f"dl{i}", config=CONFIG)
        return result.path, result.sources

    done = await asyncio.wait_for(
        asyncio.gather(*(one(i, node) for i, node in enumerate(crowd))), 120)
    from_peers = 0
    for path, sources in done:
        assert await asyncio.to_thread(file_id_of_path, path) == file_id
        from_peers += sum(n for a, n in sources.items() if a != grpc_address(seeder))
    print(f"bytes from other downloaders: {from_peers} of {3 * len(data)}")
    assert from_peers > 0  # the downloaders served each other
    for node in crowd:  # each lent its part file only while it downloaded
        assert (await http.get(rest_url(node) + "/partials")).json()["partials"] == []
    leftovers = await asyncio.to_thread(lambda: list(tmp_path.glob("dl*/.kadshare-dl-*")))
    assert leftovers == []

