"""Partial providers (issue 12 item 3): a node serves the verified chunks of a download
in progress, and refuses every other chunk with a clear status. Real nodes, real sockets."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from kadcommon import bitfield
from kadcommon.merkle import CHUNK_SIZE, leaf_hash
from protos import kadshare_pb2, kadshare_pb2_grpc
from tests.pserver.conftest import Peers, eventually, rest_url
from tests.pserver.helpers import RPC_TIMEOUT, channel, content, download, sha

CHUNKS = 8
DATA = content(CHUNKS * CHUNK_SIZE - 1000, seed=12)  # short last chunk
FILE_ID = sha(DATA)


def chunk(i: int) -> bytes:
    return DATA[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE]


def write_part(folder: Path, held: range) -> tuple[Path, Path]:
    """A part file holding ``held`` (the rest zeros) and the raw leaves beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    part, leaves = folder / ".kadshare-dl-x.part", folder / ".kadshare-dl-x.part.leaves"
    body = bytearray(len(DATA))
    for i in held:
        body[i * CHUNK_SIZE:i * CHUNK_SIZE + len(chunk(i))] = chunk(i)
    part.write_bytes(bytes(body))
    leaves.write_bytes(b"".join(leaf_hash(chunk(i)) for i in range(CHUNKS)))
    return part, leaves


def auth(node: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token}"}  # type: ignore[attr-defined]


async def register(http: httpx.AsyncClient, node: object, part: Path, leaves: Path,
                   claimed: list[int]) -> dict:
    body = {"file_id": FILE_ID, "path": str(part), "leaves": str(leaves),
            "name": "movie.bin", "size": len(DATA)}
    reply = await http.post(rest_url(node) + "/partials", json=body, headers=auth(node))
    assert reply.status_code == 201, reply.text
    flags = bytearray(CHUNKS)
    for i in claimed:
        flags[i] = 1
    reply = await http.put(rest_url(node) + f"/partials/{FILE_ID}",
                           json={"have": bitfield.pack(flags).hex()}, headers=auth(node))
    assert reply.status_code == 200, reply.text
    return reply.json()


def grpc_address(node: object) -> str:
    return f"127.0.0.1:{node.info['grpc_port']}"  # type: ignore[attr-defined]


async def test_a_partial_provider_serves_only_verified_chunks(
    peers: Peers, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    node = await peers.start()
    part, leaves = write_part(tmp_path / "dl", range(4))
    # chunk 6 is claimed but its bytes are zeros: the node must find out and not serve it
    state = await register(http, node, part, leaves, claimed=[0, 1, 2, 3, 6])
    assert state["verified"] == 4 and state["chunks"] == CHUNKS

    async with channel(grpc_address(node)) as ch:
        stub = kadshare_pb2_grpc.TransferServiceStub(ch)
        info = await stub.GetInfo(kadshare_pb2.InfoRequest(file_id=FILE_ID), timeout=RPC_TIMEOUT)
        assert list(bitfield.unpack(info.have, CHUNKS)) == [1, 1, 1, 1, 0, 0, 0, 0]
        assert info.size == len(DATA) and list(info.chunk_hashes)[5] == leaf_hash(chunk(5))
        have = await stub.Have(kadshare_pb2.InfoRequest(file_id=FILE_ID), timeout=RPC_TIMEOUT)
        assert have.have == info.have

        got = await download(stub, FILE_ID, offset=2 * CHUNK_SIZE, length=CHUNK_SIZE)
        assert got == chunk(2)
        for first in (5, 6, 3):  # missing, claimed-but-wrong, and a range running into 4
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await download(stub, FILE_ID, offset=first * CHUNK_SIZE, length=2 * CHUNK_SIZE)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not held here (partial provider, 4 of 8 chunks verified)" in (
                err.value.details() or "")

    # the chunk arrives later: the next report makes it servable
    part_bytes = bytearray(part.read_bytes())
    part_bytes[5 * CHUNK_SIZE:6 * CHUNK_SIZE] = chunk(5)
    part.write_bytes(bytes(part_bytes))
    state = await register(http, node, part, leaves, claimed=[0, 1, 2, 3, 5])
    assert state["verified"] == 5
    async with channel(grpc_address(node)) as ch:
        stub = kadshare_pb2_grpc.TransferServiceStub(ch)
        assert await download(stub, FILE_ID, offset=5 * CHUNK_SIZE, length=1) == chunk(5)[:1]

    # finished (or cancelled): the node stops serving it
    reply = await http.delete(rest_url(node) + f"/partials/{FILE_ID}", headers=auth(node))
    assert reply.status_code == 200
    async with channel(grpc_address(node)) as ch:
        stub = kadshare_pb2_grpc.TransferServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Have(kadshare_pb2.InfoRequest(file_id=FILE_ID), timeout=RPC_TIMEOUT)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_partial_provider_is_found_as_such_and_its_lease_ends(
    peers: Peers, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    seeder = await peers.start()
    node = await peers.start(join=seeder)
    part, leaves = write_part(tmp_path / "dl", range(2))
    await register(http, node, part, leaves, claimed=[0, 1])

    async def listed() -> bool:
        reply = await http.get(rest_url(seeder) + f"/providers/{FILE_ID}")
        found = reply.json().get("providers", []) if reply.status_code == 200 else []
        return any(p["grpc"] == grpc_address(node) and p["partial"] for p in found)

    await eventually(listed)
    node.partials.lease = 0.0  # the client stopped reporting
    assert await node.partials.expire() == 1

    async def gone() -> bool:
        reply = await http.get(rest_url(seeder) + f"/providers/{FILE_ID}")
        return reply.status_code == 404 or not reply.json().get("providers")

    await eventually(gone)


async def test_bad_registrations_are_refused_with_a_reason(
    peers: Peers, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    node = await peers.start()
    part, leaves = write_part(tmp_path / "dl", range(1))
    base = {"file_id": FILE_ID, "path": str(part), "leaves": str(leaves),
            "name": "movie.bin", "size": len(DATA)}
    url = rest_url(node) + "/partials"
    wrong_leaves = tmp_path / "wrong.leaves"
    wrong_leaves.write_bytes(bytes(32 * CHUNKS))
    cases = [
        ({**base, "leaves": str(wrong_leaves)}, "do not hash to the file id"),
        ({**base, "size": len(DATA) + 1}, "leaves"),
        ({**base, "path": "relative.part"}, "absolute path"),
        ({**base, "file_id": "zz"}, "malformed file id"),
        ({**base, "path": str(tmp_path / "missing.part")}, "cannot open the part file"),
    ]
    for body, why in cases:
        reply = await http.post(url, json=body, headers=auth(node))
        assert reply.status_code == 400, (body, reply.text)
        assert why in reply.json()["error"]
    assert (await http.post(url, json=base)).status_code == 401
    reply = await http.put(url + f"/{FILE_ID}", json={"have": "00"}, headers=auth(node))
    assert reply.status_code == 404
    assert (await http.post(url, json=base, headers=auth(node))).status_code == 201
    reply = await http.put(url + f"/{FILE_ID}", json={"have": "ffff"}, headers=auth(node))
    assert reply.status_code == 400 and "bitfield" in reply.json()["error"]


async def test_one_download_of_a_file_at_a_time_is_served(
    peers: Peers, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    node = await peers.start()
    part, leaves = write_part(tmp_path / "one", range(1))
    other, other_leaves = write_part(tmp_path / "two", range(2))
    await register(http, node, part, leaves, claimed=[0])
    body = {"file_id": FILE_ID, "path": str(other), "leaves": str(other_leaves),
            "name": "movie.bin", "size": len(DATA)}
    reply = await http.post(rest_url(node) + "/partials", json=body, headers=auth(node))
    assert reply.status_code == 400 and "already served here" in reply.json()["error"]
    again = await register(http, node, part, leaves, claimed=[0])  # the same one: renewed
    assert again["path"] == str(part)
