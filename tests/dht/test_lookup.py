"""Lookup behaviour that protects correctness when contacts look slow or dead."""

from __future__ import annotations

from typing import Any

from dht import DhtConfig
from dht.config import PROTOCOL_VERSION
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
        cfg = DhtConfig.for_tests(k=5, protocol_version=PROTOCOL_VERSION + 1)
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


class TestSharedSuspicion:
    async def test_a_contact_seen_dead_is_not_handed_out_to_other_askers(self) -> None:
        """After a crash, a node that saw a contact miss its hard timeout stops listing
        it in find_node answers, so other nodes' lookups do not wait for it too."""
        nodes = await start_network(5)
        try:
            holder, dead, asker = nodes[1], nodes[2], nodes[3]
            dead_id = dead.protocol.source_node.id
            near_dead = dead_id[:-1] + bytes([dead_id[-1] ^ 1])  # the dead one is closest
            assert holder.protocol.router.contains(dead_id)
            peer = next(p for p in holder.protocol.router.all_contacts() if p.id == dead_id)
            dead.stop()
            assert await holder.protocol.call_ping(peer) is None  # hard timeout: dead
            assert holder.protocol.router.contains(dead_id)  # still in the table (1 miss)
            body = await asker.protocol.call((holder.host, holder.port), "find_node",
                                             [asker.protocol.source_node.id, near_dead])
            listed = {bytes(n[0]) for n in body["nodes"]}
            assert dead_id not in listed
            assert len(listed) >= 2  # the live contacts are still handed out
        finally:
            stop_all(nodes)


class TestHedging:
    async def test_a_lookup_does_not_wait_out_a_dead_contacts_timeout(self) -> None:
        """A contact that died silently, met by a lookup whose other contacts answered:
        the lookup asks on and finishes without waiting for its timeout (here soft ==
        hard timeout, so waiting would count it failed and suspected)."""
        cfg = DhtConfig.for_tests(rpc_timeout_min=2.0, rpc_timeout_max=2.0)
        nodes = await start_network(6, cfg)
        try:
            dead, asker = nodes[2], nodes[4]
            dead_id = dead.protocol.source_node.id
            assert asker.protocol.router.contains(dead_id)
            dead.stop()
            near_dead = dead_id[:-1] + bytes([dead_id[-1] ^ 1])  # the dead one is closest
            result = await Lookup(asker.protocol, near_dead, cfg).run()
            assert result.failed == 0  # finished before the 2 s timeout fired
            assert not asker.protocol.is_suspect(dead_id)  # only this lookup gave up on it
            assert result.hedged >= 1
            got = {n.id for n in result.closest}
            assert dead_id not in got
            assert len(got) == 4  # every live node but the asker
        finally:
            stop_all(nodes)


async def miss_until_stale(holder: Any, peer: Any, cfg: DhtConfig) -> None:
    """Let ``holder`` ping the stopped ``peer`` until it has missed
    ``stale_after_misses`` hard timeouts in a row."""
    for _ in range(cfg.stale_after_misses):
        assert await holder.protocol.call_ping(peer) is None


def contact_of(holder: Any, node: Any) -> Any:
    node_id = node.protocol.source_node.id
    return next(p for p in holder.protocol.router.all_contacts() if p.id == node_id)


class TestDeadEviction:
    async def test_a_contact_proven_dead_leaves_a_bucket_without_replacements(self) -> None:
        """After ``stale_after_misses`` missed hard timeouts a dead contact is dropped even
        though no replacement waits, because its bucket keeps live contacts (the floor)."""
        cfg = DhtConfig.for_tests(rpc_timeout_max=0.3)
        nodes = await start_network(5, cfg)
        try:
            holder, dead = nodes[1], nodes[2]
            peer = contact_of(holder, dead)
            bucket = holder.protocol.router.buckets[holder.protocol.router.get_bucket_for(peer)]
            assert not bucket.replacement_nodes
            dead.stop()
            await miss_until_stale(holder, peer, cfg)
            assert not holder.protocol.router.contains(peer.id)
            assert len(holder.protocol.router.all_contacts()) >= cfg.dead_evict_floor
        finally:
            stop_all(nodes)

    async def test_the_floor_keeps_a_dead_contact_when_the_bucket_would_empty(self) -> None:
        cfg = DhtConfig.for_tests(rpc_timeout_max=0.3)
        nodes = await start_network(2, cfg)
        try:
            holder, dead = nodes[0], nodes[1]
            peer = contact_of(holder, dead)
            dead.stop()
            await miss_until_stale(holder, peer, cfg)
            assert holder.protocol.router.contains(peer.id)  # below the floor: kept
        finally:
            stop_all(nodes)
