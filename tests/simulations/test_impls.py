"""Impl edges: the tracker shrugs off garbage; the network model hooks any UDP node."""

from __future__ import annotations

import asyncio

from kademlia.network import Server

from simulations.impls.tracker import TrackerImpl, TrackerSimNode
from simulations.netmodel import NetModel
from simulations.scenarios import FileSpec

FILE = FileSpec(0, "ab" * 32, "holiday photos 0000.dat", 1234)


class _Sink(asyncio.DatagramProtocol):
    pass


async def test_tracker_drops_garbage_and_keeps_serving() -> None:
    impl = TrackerImpl()
    await impl.setup("127.0.0.1")
    try:
        loop = asyncio.get_running_loop()
        raw, _ = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", 0))
        for junk in (b"", b"\xff\xfe", b"[1,2]", b'{"op": "announce"}', b"x" * 9000):
            raw.sendto(junk, impl.address)
        raw.close()
        a = TrackerSimNode(1, "127.0.0.1", impl.node_params())
        b = TrackerSimNode(2, "127.0.0.1", impl.node_params())
        await a.start([])
        await b.start([])
        await a.announce(FILE)
        assert await b.lookup(FILE) == [a.provider_key]
        await a.leave()
        assert await b.lookup(FILE) == []
        b.crash()
    finally:
        await impl.teardown()


async def test_netmodel_counts_and_delays_a_plain_kademlia_server() -> None:
    model = NetModel(seed=1, latency=(0.03, 0.03))
    model.install(asyncio.get_running_loop())
    servers = [Server(), Server()]
    try:
        for s in servers:
            await s.listen(0, interface="127.0.0.1")
        port0 = servers[0].transport.get_extra_info("sockname")[1]
        loop = asyncio.get_running_loop()
        t = loop.time()
        ok, _ = await servers[1].protocol.ping(("127.0.0.1", port0), servers[1].node.id)
        assert ok
        assert loop.time() - t >= 0.055          # 30 ms each way
        assert sum(model.traffic.msgs.values()) >= 2
        assert model.delay("a:1", "b:2") == model.delay("b:2", "a:1") == 0.03
    finally:
        model.uninstall()
        for s in servers:
            s.stop()
