"""The datagram layer: malformed input, abandoned calls, admission, adaptive timeouts."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dht import DhtConfig, DhtNode
from dht.admission import make_proof, proof_message
from dht.identity import Identity
from dht.routing import KadNode
from dht.transport import ERROR, REQUEST, RESPONSE, MalformedDatagram, decode_datagram
from tests.dht.netutil import eventually
from tests.dht.rawpeer import RawPeer


def pack(*parts: object) -> bytes:
    return msgpack.packb(list(parts), use_bin_type=True)


MID = b"12345678"
SID = b"s" * 20
MALFORMED = [
    b"", b"\x00", b"\xc1", b"\xff" * 40, os.urandom(300), b"\x00" + os.urandom(30),
    msgpack.packb({"a": 1}), msgpack.packb("text"), pack(1, 0, MID), pack(9, 0, MID, ["ping", []]),
    pack(1, 7, MID, None), pack(1, 0, b"short", ["ping", [SID]]), pack(1, 0, MID, "ping"),
    pack(1, 0, MID, ["ping"]), pack(1, 0, MID, [5, [SID]]), pack(1, 0, MID, ["ping", SID]),
    pack(1, True, MID, ["ping", [SID]]), pack(1, 2, MID, 42),
    pack(1, 0, MID, ["rpc_ping", [SID]]), pack(1, 0, MID, ["__init__", []]),
    pack(1, 0, MID, ["welcome_if_new", [SID]]), pack(1, 0, MID, ["ping", []]),
    pack(1, 0, MID, ["ping", [SID, 1, 2, 3]]), pack(1, 0, MID, ["ping", [b"short"]]),
    pack(1, 0, MID, ["find_node", [SID, "x"]]), pack(1, 0, MID, ["find_records", [SID, SID, -1]]),
    pack(1, 0, MID, ["find_records", [SID, SID, "0"]]), pack(1, 0, MID, ["store", [SID, SID, "x"]]),
    pack(1, 0, MID, ["store", [SID, SID, [b"junk", 5, None, {"a": 1}]]]),
    pack(1, 0, MID, ["store", [SID, b"k", []]]), pack(1, 1, MID, {"id": SID}),
    pack(1, 1, os.urandom(8), {"id": 5}), b"\x94" + b"\x01" * 3, b"\xdd\xff\xff\xff\xff",
    pack(1, 0, MID, ["find_node", [SID, SID]]) + b"trailing", b"\x00" * 9000,
]


class TestDecoder:
    @pytest.mark.parametrize("data", MALFORMED[:18])
    def test_bad_shapes_raise_only_malformed(self, data: bytes) -> None:
        with pytest.raises(MalformedDatagram):
            decode_datagram(data)

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(st.binary(max_size=200))
    def test_random_bytes_never_raise_anything_else(self, data: bytes) -> None:
        try:
            decode_datagram(data, 8192)
        except MalformedDatagram:
            pass


@pytest.fixture
async def node() -> DhtNode:
    n = DhtNode(config=DhtConfig.for_tests())
    await n.listen(0)
    yield n
    n.stop()


class TestMalformedDatagrams:
    async def test_every_shape_is_dropped_and_the_node_keeps_answering(
        self, node: DhtNode, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        raw = RawPeer()
        try:
            for data in MALFORMED:
                raw.send(data, ("127.0.0.1", node.port))
            msg_id = raw.request("ping", [raw.node_id], ("127.0.0.1", node.port))
            reply = await raw.receive_reply(msg_id)
            assert reply is not None and reply.kind == RESPONSE
            assert reply.body["id"] == bytes.fromhex(node.node_id)
        finally:
            raw.close()
        stats = node.stats
        assert stats["malformed"] >= 15
        assert stats["internal_errors"] == 0
        bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert bad == []

    async def test_bad_requests_get_an_error_reply_not_silence(self, node: DhtNode) -> None:
        raw = RawPeer()
        try:
            for method, args in [("nosuch", []), ("find_node", [SID, "x"]), ("store", [SID])]:
                msg_id = raw.request(method, args, ("127.0.0.1", node.port))
                reply = await raw.receive_reply(msg_id)
                assert reply is not None and reply.kind == ERROR
        finally:
            raw.close()

    async def test_oversize_datagram_is_dropped(self, node: DhtNode) -> None:
        raw = RawPeer()
        try:
            big = pack(1, 0, MID, ["ping", [SID, b"x" * 20000]])
            raw.send(big, ("127.0.0.1", node.port))
            assert await raw.receive(timeout=0.5) is None
            assert await eventually(lambda: _true(node.stats["malformed"] == 1), 20, 0.05)
        finally:
            raw.close()


async def _true(value: bool) -> bool:
    return value


class TestCalls:
    async def test_abandoned_call_leaves_the_pending_table_and_late_reply_is_dropped(
        self, node: DhtNode
    ) -> None:
        raw = RawPeer()
        try:
            future, _ = node.protocol.request(raw.addr, "ping", [b"x" * 20])
            got = await raw.receive()
            assert got is not None
            future.cancel()
            await asyncio.sleep(0)
            assert node.protocol.pending_count() == 0
            raw.respond(got[0].msg_id, {"id": raw.node_id}, ("127.0.0.1", node.port))
            assert await eventually(lambda: _true(node.stats["unknown_reply"] == 1), 40, 0.05)
            assert node.stats["internal_errors"] == 0
            assert node.protocol.pending_count() == 0
        finally:
            raw.close()

    async def test_reply_from_another_address_is_ignored(self, node: DhtNode) -> None:
        asked, spoofer = RawPeer(), RawPeer()
        try:
            future, _ = node.protocol.request(asked.addr, "ping", [b"x" * 20])
            got = await asked.receive()
            assert got is not None
            spoofer.respond(got[0].msg_id, {"id": spoofer.node_id}, ("127.0.0.1", node.port))
            assert await eventually(lambda: _true(node.stats["spoofed_reply"] == 1), 40, 0.05)
            assert not future.done()
            asked.respond(got[0].msg_id, {"id": asked.node_id}, ("127.0.0.1", node.port))
            assert (await asyncio.wait_for(future, 3))["id"] == asked.node_id
        finally:
            asked.close()
            spoofer.close()

    async def test_timeout_adapts_to_measured_round_trips(self) -> None:
        cfg = DhtConfig.for_tests(rpc_timeout_initial=1.0, rpc_timeout_min=0.05)
        a, b = DhtNode(config=cfg), DhtNode(config=cfg)
        await a.listen(0)
        await b.listen(0)
        try:
            addr = ("127.0.0.1", b.port)
            assert a.protocol.rtt.timeout_for(addr) == 1.0
            for _ in range(10):
                await a.protocol.call(addr, "ping", [bytes.fromhex(a.node_id)])
            assert a.protocol.rtt.timeout_for(addr) < 1.0
        finally:
            a.stop()
            b.stop()

    async def test_unanswered_call_times_out_and_is_removed(self) -> None:
        cfg = DhtConfig.for_tests(rpc_timeout_max=0.3, rpc_timeout_min=0.05)
        n = DhtNode(config=cfg)
        await n.listen(0)
        raw = RawPeer()
        try:
            with pytest.raises(Exception, match="no reply"):
                await n.protocol.call(raw.addr, "ping", [b"x" * 20])
            assert n.protocol.pending_count() == 0 and n.stats["timeouts"] == 1
        finally:
            raw.close()
            n.stop()


class TestAdmission:
    async def test_a_sender_that_never_answers_stays_out_of_the_table(
        self, node: DhtNode
    ) -> None:
        raw = RawPeer()
        try:
            msg_id = raw.request("ping", [raw.node_id], ("127.0.0.1", node.port))
            assert await raw.receive_reply(msg_id) is not None
            # the node now probes us with its own ping; we stay silent
            probe = await raw.receive()
            assert probe is not None and probe[0].kind == REQUEST and probe[0].method == "ping"
            assert node.contacts() == []
        finally:
            raw.close()

    @staticmethod
    async def _answer_probe(node: DhtNode, raw: RawPeer, proof: Callable[[bytes], dict]) -> None:
        """Ping ``node`` from ``raw``, then answer its probe with {id, **proof(nonce)}."""
        raw.request("ping", [raw.node_id], ("127.0.0.1", node.port))
        for _ in range(5):
            got = await raw.receive()
            assert got is not None
            if got[0].kind == REQUEST:
                assert got[0].method == "ping" and len(got[0].body) == 2  # id, nonce
                reply = {"id": raw.node_id, **proof(got[0].body[1])}
                raw.respond(got[0].msg_id, reply, ("127.0.0.1", node.port))
                return
        raise AssertionError("no probe came")

    async def test_a_sender_that_proves_its_id_is_admitted(self, node: DhtNode) -> None:
        raw, me = RawPeer(), bytes.fromhex(node.node_id)
        key = Identity.generate()
        raw.node_id = key.node_id
        try:
            await self._answer_probe(node, raw, lambda nonce: make_proof(key, nonce, me))
            assert await eventually(lambda: _true(len(node.contacts()) == 1), 40, 0.05)
            assert node.contacts()[0].node_id == raw.node_id.hex()
        finally:
            raw.close()

    @pytest.mark.parametrize("lie", ["no proof", "another key", "wrong signature", "old nonce"])
    async def test_a_sender_claiming_an_id_it_does_not_own_stays_out(
        self, node: DhtNode, lie: str
    ) -> None:
        """Claiming a chosen id (e.g. next to a target) without its private key fails."""
        raw, me = RawPeer(), bytes.fromhex(node.node_id)
        victim, mine = Identity.generate(), Identity.generate()
        raw.node_id = victim.node_id

        def proof(nonce: bytes) -> dict:
            if lie == "no proof":
                return {}
            if lie == "another key":  # a valid signature, by a key hashing to another id
                return make_proof(mine, nonce, me) | {"sig": mine.sign(
                    proof_message(nonce, me, victim.node_id))}
            if lie == "wrong signature":
                return {"key": victim.public_key, "sig": mine.sign(
                    proof_message(nonce, me, victim.node_id))}
            return make_proof(victim, bytes(16), me)  # a replayed answer to another nonce

        try:
            await self._answer_probe(node, raw, proof)
            ok = await eventually(lambda: _true(node.stats["id_proofs_failed"] >= 1), 40, 0.05)
            assert ok and node.contacts() == []
            # it keeps talking to us: it is still not admitted, and not probed again at once
            raw.request("ping", [raw.node_id], ("127.0.0.1", node.port))
            assert await raw.receive(timeout=0.3) is not None
            assert node.contacts() == []
        finally:
            raw.close()


def _identity_where(predicate: Callable[[bytes], bool]) -> Identity:
    """A fresh identity whose node id satisfies ``predicate`` (half of all ids do)."""
    for _ in range(200):
        ident = Identity.generate()
        if predicate(ident.node_id):
            return ident
    raise AssertionError("no such id in 200 draws")


class TestProofOnlyWhenASlotIsFree:
    """A node whose bucket is full is not asked for an id proof (a ping, a signature
    and a check per unknown node was most of a 2,000-node network's traffic); it waits
    as a replacement and proves its id when a slot frees."""

    @staticmethod
    async def _full_far_bucket() -> tuple[DhtNode, list[bytes]]:
        """A node (id starting with bit 0) whose far bucket (ids starting with bit 1)
        holds 20 contacts sharing a 5-bit prefix, so it is full and does not split."""
        me = _identity_where(lambda i: i[0] < 0x80)
        node = DhtNode(identity=me, config=DhtConfig.for_tests())
        await node.listen(port=0, interface="127.0.0.1")
        far = [bytes([0x80 | (j & 1) << 2]) + os.urandom(19) for j in range(20)]
        near = [bytes([os.urandom(1)[0] & 0x7F]) + os.urandom(19) for _ in range(20)]
        assert node.prefill([(i, ("127.0.0.1", 9)) for i in far + near]) == 40
        return node, far

    async def test_an_unknown_sender_for_a_full_bucket_is_not_probed_until_a_slot_frees(
        self,
    ) -> None:
        node, far = await self._full_far_bucket()
        raw, me = RawPeer(), bytes.fromhex(node.node_id)
        key = _identity_where(lambda i: i[0] >= 0x80 and i[0] & 0xF8 != 0x80)
        raw.node_id = key.node_id
        try:
            msg_id = raw.request("ping", [raw.node_id], ("127.0.0.1", node.port))
            assert await raw.receive_reply(msg_id) is not None
            assert await raw.receive(timeout=0.5) is None  # no probe: the bucket is full
            assert raw.node_id.hex() not in {c.node_id for c in node.contacts()}
            # a contact of that bucket leaves: the waiting sender is asked for its proof
            node.protocol.router.remove_contact(KadNode(far[0], "127.0.0.1", 9))
            got = await raw.receive()
            assert got is not None and got[0].kind == REQUEST and got[0].method == "ping"
            nonce = got[0].body[1]
            raw.respond(got[0].msg_id, {"id": raw.node_id, **make_proof(key, nonce, me)},
                        ("127.0.0.1", node.port))
            ok = await eventually(lambda: _true(
                raw.node_id.hex() in {c.node_id for c in node.contacts()}), 40, 0.05)
            assert ok and node.stats["id_proofs_ok"] == 1
        finally:
            raw.close()
            node.stop()

    async def test_a_sender_proven_before_is_welcomed_without_a_ping(self) -> None:
        node, far = await self._full_far_bucket()
        raw = RawPeer()
        raw.node_id = _identity_where(lambda i: i[0] >= 0x80).node_id
        try:
            node.protocol.router.remove_contact(KadNode(far[0], "127.0.0.1", 9))
            node.protocol.admit_proven(KadNode(raw.node_id, *raw.addr))  # proved before
            node.protocol.router.remove_contact(KadNode(raw.node_id, *raw.addr))
            msg_id = raw.request("ping", [raw.node_id], ("127.0.0.1", node.port))
            assert await raw.receive_reply(msg_id) is not None
            assert await raw.receive(timeout=0.5) is None
            assert raw.node_id.hex() in {c.node_id for c in node.contacts()}
        finally:
            raw.close()
            node.stop()
