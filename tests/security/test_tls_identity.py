"""Transfers over TLS bound to the node identity (issue 13 item 1).

Real gRPC servers on 127.0.0.1; the "capture" is a TCP relay on loopback that records
every byte both ways, so what an on-path observer sees is checked without tcpdump.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dht.config import DhtConfig
from dht.identity import Identity
from kadcommon import tlsid
from kadcommon.merkle import file_id_of_bytes
from pclient import DownloadConfig
from pclient.download import download_file
from pclient.errors import TransferFailed
from pclient.grpcutil import Dialer
from protos import kadshare_pb2, kadshare_pb2_grpc
from pserver.config import NodeConfig
from pserver.grpcsec import ServerSecurity
from pserver.node import Node
from tests.pclient.provider import FaultyProvider

CONTENT = os.urandom(3 * 256 * 1024 + 17)
FILE_ID = file_id_of_bytes(CONTENT)
CONFIG = DownloadConfig(sources=2, info_timeout=5.0, stall_timeout=10.0)


async def _node(tmp: Path, name: str, **options: object) -> Node:
    share = tmp / name / "share"
    share.mkdir(parents=True)
    (share / "secret.bin").write_bytes(CONTENT)
    config = NodeConfig(data_dir=tmp / name / "data", share_dir=share,
                        dht_config=DhtConfig.for_tests(), settle_seconds=0, **options)
    return await asyncio.wait_for(Node.start(config), 60)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    peer = await _node(tmp_path, "a")
    yield peer
    await asyncio.wait_for(peer.stop(), 30)


@pytest.fixture
async def impostor(tmp_path: Path) -> AsyncIterator[FaultyProvider]:
    """A TLS peer with its own (different) identity serving the same bytes."""
    path = tmp_path / "impostor.bin"
    path.write_bytes(CONTENT)
    provider = await FaultyProvider(path).start()
    yield provider
    await provider.stop()


class Relay:
    """A TCP relay on loopback that keeps every byte passing through (both ways)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.seen = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Relay:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(1_000_000):  # bounded: at most a million reads per direction
                data = await reader.read(65536)
                if not data:
                    break
                self.seen += data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class TestIdentityBinding:
    async def test_impostor_at_a_providers_address_is_refused_with_the_reason(
        self, node: Node, impostor: FaultyProvider, tmp_path: Path
    ) -> None:
        address = f"127.0.0.1:{impostor.port}"
        dialer = Dialer({address: node.info["node_id"]})  # the record said: node A there
        with pytest.raises(TransferFailed) as caught:
            await download_file(FILE_ID, tmp_path / "out", [address], config=CONFIG,
                                dialer=dialer)
        why = caught.value.reasons[address]
        assert why.startswith("refused: it is node")
        assert f"not node {node.info['node_id'][:12]}" in why
        assert "impostor" in why
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    async def test_the_genuine_node_passes_and_the_file_arrives(
        self, node: Node, tmp_path: Path
    ) -> None:
        address = f"127.0.0.1:{node.info['grpc_port']}"
        dialer = Dialer({address: node.info["node_id"]})
        result = await download_file(FILE_ID, tmp_path, [address], config=CONFIG, dialer=dialer)
        assert result.path.read_bytes() == CONTENT
        assert dialer.node_id(address) == node.info["node_id"]

    async def test_a_replayed_certificate_cannot_finish_the_handshake(
        self, node: Node, impostor: FaultyProvider
    ) -> None:
        """The client pins node A's genuine certificate; a server without A's TLS key
        (the impostor) cannot complete the handshake, so the call never happens."""
        genuine = await tlsid.fetch_certificate("127.0.0.1", node.info["grpc_port"])
        creds = grpc.ssl_channel_credentials(root_certificates=tlsid.der_to_pem(genuine))
        name = tlsid.tls_name(node.info["node_id"])
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{impostor.port}", creds,
            options=[("grpc.ssl_target_name_override", name)],
        ) as channel:
            stub = kadshare_pb2_grpc.TransferServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetInfo(kadshare_pb2.InfoRequest(file_id=FILE_ID), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    def test_a_certificate_signed_by_another_identity_is_refused(self) -> None:
        owner, other = Identity.generate(), Identity.generate()
        # binding signed by `other` but claiming `owner`'s public key
        forged = tlsid.make_server_cert(owner.public_key, other.sign, owner.node_id_hex)
        der = x509.load_pem_x509_certificate(forged.cert_pem).public_bytes(
            serialization.Encoding.DER)
        with pytest.raises(tlsid.PeerIdentityError, match="signature is invalid"):
            tlsid.identity_of(der)
        good = tlsid.make_server_cert(owner.public_key, owner.sign, owner.node_id_hex)
        assert tlsid.identity_of(good.der) == owner.node_id_hex


class TestCertificateReading:
    """``identity_of`` accepts no variant of a genuine certificate that proves anything
    else, and refuses garbage with a reason."""

    def test_forged_bindings_are_refused(self) -> None:
        owner, other = Identity.generate(), Identity.generate()
        good = tlsid.make_server_cert(owner.public_key, owner.sign, owner.node_id_hex)
        assert tlsid.identity_of(good.der) == owner.node_id_hex
        for forged in (tlsid.make_server_cert(owner.public_key, other.sign, owner.node_id_hex),
                       tlsid.make_server_cert(other.public_key, other.sign, owner.node_id_hex)):
            with pytest.raises(tlsid.PeerIdentityError):
                tlsid.identity_of(forged.der)

    def test_every_one_byte_change_is_refused_or_proves_the_same_identity(self) -> None:
        """Each byte of a genuine certificate, flipped three ways, and every truncation:
        the reading returns the genuine id or refuses, never another id or a traceback."""
        owner = Identity.generate()
        der = tlsid.make_server_cert(owner.public_key, owner.sign, owner.node_id_hex).der
        variants = [der[:cut] for cut in range(len(der))] + [der + b"\x00"]
        for pos in range(len(der)):
            for flip in (0x01, 0x80, 0xFF):
                variants.append(der[:pos] + bytes([der[pos] ^ flip]) + der[pos + 1:])
        accepted = 0
        for variant in variants:
            try:
                got = tlsid.identity_of(variant)
            except tlsid.PeerIdentityError:
                continue
            accepted += 1
            assert got == owner.node_id_hex
        assert accepted < len(variants) // 2  # (the outer signature is not checked here)

    def test_no_extension_or_garbage_is_refused_with_a_reason(self) -> None:
        for der in (b"", b"\x30\x00", b"\x30\x80\x00\x00", os.urandom(300)):
            with pytest.raises(tlsid.PeerIdentityError, match="unreadable|no kadshare"):
                tlsid.identity_of(der)


class TestOnTheWire:
    async def test_file_bytes_never_cross_the_wire_in_clear(
        self, node: Node, tmp_path: Path
    ) -> None:
        relay = await Relay(node.info["grpc_port"]).start()
        try:
            address = f"127.0.0.1:{relay.port}"
            dialer = Dialer({address: node.info["node_id"]})
            result = await download_file(FILE_ID, tmp_path, [address], config=CONFIG,
                                         dialer=dialer)
        finally:
            await relay.stop()
        assert result.path.read_bytes() == CONTENT
        assert len(relay.seen) > len(CONTENT)  # the whole transfer passed the relay
        assert relay.seen[:3] == b"\x16\x03\x01"  # a TLS handshake record comes first
        for start in range(0, len(CONTENT) - 64, 65_536):
            assert CONTENT[start:start + 64] not in relay.seen

    async def test_insecure_transfers_are_plaintext_and_say_so(self, tmp_path: Path) -> None:
        """The control: the same relay does see the bytes of a --insecure-transfers node,
        whose status says ``plaintext``; a TLS client refuses it with the reason."""
        peer = await _node(tmp_path, "plain", insecure_transfers=True)
        relay = await Relay(peer.info["grpc_port"]).start()
        try:
            assert peer.status()["transfers"] == "plaintext"
            address = f"127.0.0.1:{relay.port}"
            with pytest.raises(TransferFailed) as caught:
                await download_file(FILE_ID, tmp_path / "x", [address], config=CONFIG)
            assert "does not speak TLS" in repr(caught.value.reasons)
            result = await download_file(FILE_ID, tmp_path, [address], config=CONFIG,
                                         dialer=Dialer(tls=False))
        finally:
            await relay.stop()
            await asyncio.wait_for(peer.stop(), 30)
        assert result.path.read_bytes() == CONTENT
        assert CONTENT[:64] in relay.seen

    def test_server_security_reports_its_mode(self) -> None:
        ident = Identity.generate()
        assert ServerSecurity.create(ident.public_key, ident.sign, ident.node_id_hex).mode == "tls"
        assert ServerSecurity.create(ident.public_key, ident.sign, ident.node_id_hex,
                                     tls=False).mode == "plaintext"
