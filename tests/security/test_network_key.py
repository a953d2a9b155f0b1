"""Closed networks (issue 13 item 4): a peer with the wrong key is refused at the DHT
and at the gRPC level; key files are made and checked."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from dht import DhtConfig, DhtNode
from kadcommon.merkle import file_id_of_bytes
from kadcommon.netkey import NetworkKey, NetworkKeyError, load_key, parse_key_text
from pclient.grpcutil import Dialer
from protos import kadshare_pb2, kadshare_pb2_grpc
from pserver import cli
from pserver.config import NodeConfig
from pserver.node import Node

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
CONTENT = os.urandom(100_000)
FILE_ID = file_id_of_bytes(CONTENT)


def _dht(key: bytes) -> DhtNode:
    return DhtNode(config=DhtConfig.for_tests(network_key=key, lookup_timeout=2.0,
                                              rpc_timeout_max=0.5))


class TestDht:
    async def test_wrong_or_missing_key_cannot_join_and_is_counted(self) -> None:
        member, same, wrong, public = _dht(KEY), _dht(KEY), _dht(OTHER), _dht(b"")
        for n in (member, same, wrong, public):
            await n.listen(port=0, interface="127.0.0.1")
        try:
            boot = [("127.0.0.1", member.port)]
            assert await wrong.bootstrap(boot) == 0
            assert await public.bootstrap(boot) == 0
            assert wrong.contacts() == [] and public.contacts() == []
            assert member.stats["bad_network_mac"] >= 2  # both pings dropped and counted
            assert await same.bootstrap(boot) == 1  # the same key joins
            assert [c.node_id for c in member.contacts()] == [same.node_id]
        finally:
            for n in (member, same, wrong, public):
                n.stop()

    def test_sealed_datagrams_open_only_with_the_same_key(self) -> None:
        sealed = NetworkKey(KEY).seal(b"hello")
        assert NetworkKey(KEY).open(sealed) == b"hello"
        assert NetworkKey(OTHER).open(sealed) is None
        assert NetworkKey(KEY).open(sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
        assert NetworkKey(KEY).open(b"short") is None


@pytest.fixture
async def closed_node(tmp_path: Path) -> AsyncIterator[Node]:
    share = tmp_path / "share"
    share.mkdir()
    (share / "club.bin").write_bytes(CONTENT)
    config = NodeConfig(data_dir=tmp_path / "data", share_dir=share, network_key=KEY,
                        dht_config=DhtConfig.for_tests(), settle_seconds=0)
    node = await asyncio.wait_for(Node.start(config), 60)
    yield node
    await asyncio.wait_for(node.stop(), 30)


async def _get_info(node: Node, netkey: NetworkKey | None) -> kadshare_pb2.FileInfo:
    address = f"127.0.0.1:{node.info['grpc_port']}"
    dialer = Dialer({address: node.info["node_id"]}, netkey=netkey)
    channel = await dialer.open(address)
    try:
        stub = kadshare_pb2_grpc.TransferServiceStub(channel)
        return await stub.GetInfo(kadshare_pb2.InfoRequest(file_id=FILE_ID), timeout=5)
    finally:
        await channel.close()


class TestGrpc:
    async def test_wrong_or_missing_key_is_refused(self, closed_node: Node) -> None:
        for netkey in (None, NetworkKey(OTHER)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _get_info(closed_node, netkey)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "closed network" in (caught.value.details() or "")
        info = await _get_info(closed_node, NetworkKey(KEY))
        assert info.size == len(CONTENT)
        assert closed_node.status()["network"] == NetworkKey(KEY).fingerprint


class TestKeyFiles:
    def test_gen_network_key_writes_a_loadable_private_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "net.key"
        assert cli.main(["--gen-network-key", str(path)]) == 0
        assert len(load_key(path)) == 32
        assert path.stat().st_mode & 0o077 == 0
        assert cli.main(["--gen-network-key", str(path)]) == 2  # never overwrites
        assert "not overwriting" in capsys.readouterr().err

    @pytest.mark.parametrize("text, why", [
        ("", "exactly one line"), ("zz" * 32, "not hex"), ("ab" * 16, "16 bytes"),
        ("ab" * 32 + "\n" + "cd" * 32, "exactly one line"),
    ])
    def test_bad_key_text_says_why(self, text: str, why: str) -> None:
        with pytest.raises(NetworkKeyError, match=why):
            parse_key_text(text)

    def test_node_refuses_a_bad_key_file_with_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        bad = tmp_path / "bad.key"
        bad.write_text("not a key\n")
        code = cli.main(["--data", str(tmp_path / "d"), "--network-key", str(bad)])
        assert code == 2
        assert "network key" in capsys.readouterr().err
        assert parse_key_text("# comment\n\n" + "ab" * 32 + "\n") == bytes([0xAB]) * 32
