"""One test per defect of the upstream ``kademlia``/``rpcudp`` packages we work around.

Each test first shows the upstream behaviour (so a fixed upstream release is noticed),
then checks that kadshare's replacement behaves.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
import umsgpack
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import KBucket
from kademlia.routing import RoutingTable as UpstreamTable
from kademlia.storage import ForgetfulStorage
from rpcudp.exceptions import MalformedMessage
from rpcudp.protocol import RPCProtocol

from dht import DhtConfig, DhtNode, Identity
from dht.keys import file_key
from dht.protocol import KadshareProtocol
from dht.records import make_provider
from dht.routing import KadNode, RoutingTable
from dht.storage import RecordStore
from tests.dht.netutil import eventually
from tests.dht.rawpeer import RawPeer

MAX = 2**160


def _three_buckets(table: UpstreamTable) -> None:
    """Contacts only in the left bucket; the target falls in the (empty) right one."""
    quarter = MAX // 4
    left, middle, right = (KBucket(0, quarter, 20), KBucket(quarter + 1, 2 * quarter, 20),
                           KBucket(2 * quarter + 1, MAX, 20))
    for i in range(5):
        nid = (i + 1).to_bytes(20, "big")
        left.add_node(KadNode(nid, "127.0.0.1", 1000 + i))
    table.buckets = [left, middle, right]


class TestFindNeighborsWalk:
    def test_upstream_walk_stops_early(self) -> None:
        table = UpstreamTable(None, 20, Node(b"\x00" * 20))
        _three_buckets(table)
        target = Node((MAX - 1).to_bytes(20, "big"))
        assert table.find_neighbors(target) == []  # although the table holds 5 contacts

    def test_kadshare_walk_visits_every_bucket(self) -> None:
        table = RoutingTable(None, 20, KadNode(b"\x00" * 20), DhtConfig.for_tests())
        _three_buckets(table)
        target = KadNode((MAX - 1).to_bytes(20, "big"))
        found = table.find_neighbors(target)
        assert len(found) == 5
        assert found == sorted(found, key=lambda n: n.long_id ^ target.long_id)

    def test_bucket_choice_includes_the_upper_bound(self) -> None:
        table = RoutingTable(None, 20, KadNode(b"\x00" * 20), DhtConfig.for_tests())
        _three_buckets(table)
        edge = KadNode((MAX // 4).to_bytes(20, "big"))
        assert table.buckets[table.get_bucket_for(edge)].has_in_range(edge)
        upstream = UpstreamTable(None, 20, Node(b"\x00" * 20))
        _three_buckets(upstream)
        assert not upstream.buckets[upstream.get_bucket_for(edge)].has_in_range(edge)


def _handoff_case() -> tuple[bytes, Node, Node, Node]:
    """A stored key K, our node, a far neighbour, and a newcomer right next to K.

    The file id is one for which upstream's second hash lands where the newcomer does
    not look closer (about half of all keys).
    """
    fid = "ef" * 32
    key = file_key(fid)
    k = int.from_bytes(key, "big")
    me = Node((k ^ (1 << 100)).to_bytes(20, "big"), "127.0.0.1", 1)
    far = Node((k ^ (1 << 159)).to_bytes(20, "big"), "127.0.0.1", 2)
    newcomer = Node((k ^ 1).to_bytes(20, "big"), "127.0.0.1", 3)
    return key, me, far, newcomer


class TestWelcomeIfNewHash:
    def test_upstream_hashes_the_stored_key_again(self) -> None:
        key, me, far, newcomer = _handoff_case()
        # upstream measures distance to sha1(key) although the key already is a digest
        double = Node(hashlib.sha1(key).digest())
        correct = Node(key)
        assert newcomer.distance_to(correct) < far.distance_to(correct)
        assert me.distance_to(correct) < far.distance_to(correct)
        upstream_says = (newcomer.distance_to(double) < far.distance_to(double)
                         and me.distance_to(double) < far.distance_to(double))
        upstream_calls: list[Node] = []
        proto = KademliaProtocol(me, ForgetfulStorage(), 20)
        proto.router.add_contact(far)
        proto.storage[key] = b"value"

        async def fake_store(node: Node, k: bytes, v: bytes) -> None:
            upstream_calls.append(node)

        proto.call_store = fake_store  # type: ignore[method-assign]

        async def run() -> None:
            proto.welcome_if_new(newcomer)
            await asyncio.sleep(0)

        asyncio.run(run())
        assert not upstream_says  # for this key the second hash points elsewhere...
        assert upstream_calls == []  # ...so the closest newcomer never gets the record

    async def test_kadshare_hands_records_to_the_closer_newcomer(self) -> None:
        key, me, far, newcomer = _handoff_case()
        store = RecordStore(DhtConfig.for_tests())
        store.put(key, make_provider(Identity.generate(), "ef" * 32, "f", 1, "h:1", 30))
        proto = KadshareProtocol(KadNode(me.id, me.ip, me.port), store, DhtConfig.for_tests())
        proto.router.add_contact(KadNode(far.id, far.ip, far.port))
        calls: list[tuple[bytes, bytes, int]] = []

        async def fake_store(node: KadNode, k: bytes, encoded: list[bytes]) -> int:
            calls.append((node.id, k, len(encoded)))
            return len(encoded)

        proto.call_store_records = fake_store  # type: ignore[method-assign]
        proto.welcome_if_new(KadNode(newcomer.id, newcomer.ip, newcomer.port))

        async def handed() -> bool:
            return bool(calls)

        assert await eventually(handed, 40, 0.05)
        assert calls == [(newcomer.id, key, 1)]
        proto.close()


class TestRpcudp:
    async def test_upstream_raises_on_undecodable_datagram(self) -> None:
        proto = RPCProtocol()
        with pytest.raises(Exception):  # noqa: B017  (umsgpack's own error types)
            await proto._solve_datagram(b"\x00" + os.urandom(20) + b"\xc1", ("127.0.0.1", 1))
        with pytest.raises(MalformedMessage):
            await proto._accept_request(b"x" * 20, "not a list", ("127.0.0.1", 1))

    async def test_upstream_cancelled_call_corrupts_the_pending_table(self) -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            RPCProtocol, local_addr=("127.0.0.1", 0)
        )
        raw = RawPeer()
        try:
            future = proto.ping(raw.addr)
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(raw.sock, 9000), 3)
            future.cancel()
            msg_id = data[1:21]
            with pytest.raises(asyncio.InvalidStateError):
                proto._accept_response(msg_id, umsgpack.packb(True), raw.addr)
            assert msg_id in proto._outstanding  # the entry leaks until the 5 s timer
        finally:
            for _fut, timer in proto._outstanding.values():
                timer.cancel()
            transport.close()
            raw.close()

    async def test_upstream_admits_any_sender_into_the_routing_table(self) -> None:
        server = Server()
        await server.listen(0, "127.0.0.1")
        port = server.transport.get_extra_info("sockname")[1]
        raw = RawPeer()
        try:
            data = b"\x00" + os.urandom(20) + umsgpack.packb(["ping", [raw.node_id]])
            raw.send(data, ("127.0.0.1", port))
            await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(raw.sock, 9000), 3)
            ids = [n.id for b in server.protocol.router.buckets for n in b.nodes.values()]
            assert raw.node_id in ids  # never verified that it answers
        finally:
            server.stop()
            raw.close()

    async def test_kadshare_admits_only_after_an_answer(self) -> None:
        node = DhtNode(config=DhtConfig.for_tests())
        await node.listen(0)
        raw = RawPeer()
        try:
            raw.request("ping", [raw.node_id], ("127.0.0.1", node.port))
            assert await raw.receive() is not None
            assert node.contacts() == []

            async def empty() -> bool:
                return node.contacts() == []

            assert await eventually(empty, 4, 0.05)
        finally:
            raw.close()
            node.stop()
