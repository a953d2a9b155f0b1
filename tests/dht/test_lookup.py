"""Lookup behaviour that protects correctness when contacts look slow or dead."""

from __future__ import annotations

from dht import DhtConfig
from dht.keys import file_key
from dht.lookup import Lookup
from tests.dht.netutil import file_id_of, start_network, stop_all


class TestLookupFallbacks:
    async def test_contacts_all_suspected_are_still_asked(self) -> None:
        nodes = await start_network(4)
        try:
            fid = file_id_of("suspected holders")
            await nodes[1].announce(fid, "held.bin", 1, grpc="127.0.0.1:1")
            reader = nodes[3]
            reader.store.clear()  # the answer must come from the network
            for peer in reader.protocol.router.all_contacts():
                reader.protocol.suspect(peer.id, 60.0)  # e.g. after a load spike
            found = await reader.find_providers(fid)
            assert [p.node_id for p in found] == [nodes[1].node_id]
        finally:
            stop_all(nodes)

    async def test_wanted_stops_early_and_full_lookup_hears_k_closest(self) -> None:
        cfg = DhtConfig.for_tests(k=5)
        nodes = await start_network(12, cfg)
        try:
            fid = file_id_of("early stop")
            for node in nodes[:4]:
                await node.announce(fid, "early.bin", 1, grpc="127.0.0.1:1")
            reader = nodes[-1]
            one = await Lookup(reader.protocol, file_key(fid), cfg, records=True, wanted=1).run()
            full = await Lookup(reader.protocol, file_key(fid), cfg, records=True).run()
            assert len(one.positive()) >= 1
            assert len(full.positive()) == 4
            assert len(full.closest) == 5
            assert one.queried <= full.queried
        finally:
            stop_all(nodes)
