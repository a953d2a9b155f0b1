"""Lookup behaviour that protects correctness when contacts look slow or dead."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dht import DhtConfig, DhtNode
from dht.config import PROTOCOL_VERSION
from dht.keys import file_key
from dht.lookup import Lookup
from tests.dht.netutil import file_id_of, start_network, stop_all
from tests.security.nodethread import LoopThread


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

    async def test_a_contact_suspected_by_a_concurrent_lookup_is_not_asked(self) -> None:
        """A lookup learnt of a contact (here: its first candidates, pushed before the
        run) that another lookup of the same node then saw miss a timeout: it skips the
        contact instead of paying its own timeout for it.  (Before: suspicion was checked
        only when a contact first entered a lookup.)"""
        cfg = DhtConfig.for_tests(rpc_timeout_min=1.0, rpc_timeout_max=2.0)
        nodes = await start_network(6, cfg)
        try:
            dead_id, asker, near_dead = stop_a_contact(nodes)
            lookup = Lookup(asker.protocol, near_dead, cfg)
            lookup._push(closest_to(asker, near_dead, cfg.k))  # learnt of it: not suspect
            asker.protocol.suspect(dead_id)  # ... then a concurrent lookup suspects it
            result = await lookup.run()
            assert dead_id not in result.asked
            assert result.hedged == 0 and result.failed == 0
            assert len(result.closest) == 4  # every live node but the asker
        finally:
            stop_all(nodes)


class TestHedging:
    async def test_a_dead_contact_does_not_hold_up_the_contacts_after_it(self) -> None:
        """A contact that died silently, met by a lookup whose other contacts answered:
        its slot goes to the next contact long before its timeout (here soft == hard
        timeout), so every live node is asked and answers meanwhile; it is left out."""
        cfg = DhtConfig.for_tests(rpc_timeout_min=1.0, rpc_timeout_max=1.0)
        nodes = await start_network(6, cfg)
        try:
            dead_id, asker, near_dead = stop_a_contact(nodes)
            result = await Lookup(asker.protocol, near_dead, cfg).run()
            assert result.hedged >= 1
            got = {n.id for n in result.closest}
            assert dead_id not in got
            assert len(got) == 4  # every live node but the asker
        finally:
            stop_all(nodes)

    async def test_a_slow_live_contact_keeps_its_replica(self) -> None:
        """A live contact that answers late (its loop busy for 0.8 s, as on a loaded
        machine) is hedged by an announce's lookup, which asks on, but the lookup still
        waits for it up to its soft timeout: it stays among the closest and stores the
        record.  (A hedge that gave up on it left the replica out: TestSybil failures
        beside CPU hogs, issue 16.)"""
        cfg = DhtConfig.for_tests(rpc_timeout_min=2.0, rpc_timeout_max=3.0)
        nodes = await start_network(5, cfg)
        lt = LoopThread()
        slow: DhtNode | None = None
        try:
            def there(coro: Any) -> Any:
                return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, lt.loop))

            async def start_slow() -> DhtNode:
                node = DhtNode(config=cfg)
                await node.listen(0, "127.0.0.1")
                return node

            slow = await there(start_slow())
            await there(slow.bootstrap([("127.0.0.1", nodes[0].port)]))
            asker = nodes[-1]
            await asker.bootstrap([("127.0.0.1", slow.port)])
            slow_id = slow.protocol.source_node.id
            assert asker.protocol.router.contains(slow_id)
            # the lookup's target is nearest the slow node (its id, last bit flipped); the
            # announce's key is any: 6 nodes < k, so every node is a replica
            key = slow_id[:-1] + bytes([slow_id[-1] ^ 1])
            fid = file_id_of("slow replica")
            lt.loop.call_soon_threadsafe(time.sleep, 0.8)  # the slow node's loop is busy
            result = await Lookup(asker.protocol, key, cfg).run()
            assert result.hedged >= 1  # it was hedged ...
            assert slow_id in {n.id for n in result.closest}  # ... and kept
            assert not asker.protocol.is_suspect(slow_id)
            lt.loop.call_soon_threadsafe(time.sleep, 0.8)
            await asker.announce(fid, "slow.bin", 1, grpc="127.0.0.1:1")

            async def held(node: DhtNode) -> int:
                return len(node.store.records(file_key(fid)))
            assert await there(held(slow)) == 1
        finally:
            if slow is not None:
                lt.run(_stop(slow))
            lt.close()
            stop_all(nodes)


async def _stop(node: DhtNode) -> None:
    node.stop()


def stop_a_contact(nodes: list[DhtNode]) -> tuple[bytes, DhtNode, bytes]:
    """Stop nodes[2] silently (a contact of nodes[4]); return its id, the asker nodes[4]
    and a target the dead node is the closest node to."""
    dead, asker = nodes[2], nodes[4]
    dead_id = dead.protocol.source_node.id
    assert asker.protocol.router.contains(dead_id)
    dead.stop()
    return dead_id, asker, dead_id[:-1] + bytes([dead_id[-1] ^ 1])


def closest_to(asker: Any, target: bytes, count: int) -> list[Any]:
    """``asker``'s ``count`` contacts closest to ``target`` (its table's order)."""
    from dht.routing import KadNode
    return asker.protocol.router.find_neighbors(KadNode(target), count)


class TestFirstRound:
    async def test_the_contact_heard_from_last_takes_a_first_round_slot(self) -> None:
        """The alpha closest contacts died silently (the asker has not met them since);
        one contact farther away answered the asker later than they did, so the first
        round asks it beside the alpha - 1 closest instead of waiting on dead contacts
        only.  (Without lookup_fresh_first the first alpha asked are the dead ones.)"""
        cfg = DhtConfig.for_tests(rpc_timeout_min=1.0, rpc_timeout_max=2.0,
                                  lookup_probe_first_round=False)
        nodes = await start_network(8, cfg)
        try:
            asker = nodes[-1]
            first = nodes[0].protocol.source_node.id
            target = first[:-1] + bytes([first[-1] ^ 1])  # not a node's own id
            near = closest_to(asker, target, 8)
            dead, fresh = near[: cfg.alpha], near[cfg.alpha + 1]
            by_id = {n.protocol.source_node.id: n for n in nodes}
            for peer in dead:
                by_id[peer.id].stop()
            assert await asker.protocol.call_ping(fresh) is not None  # heard from now
            result = await Lookup(asker.protocol, target, cfg).run()
            assert fresh.id in result.asked[: cfg.alpha]
            assert {p.id for p in dead} & set(result.asked[: cfg.alpha])  # still asked
            assert result.failed == 0
            assert not {n.id for n in result.closest} & {p.id for p in dead}
        finally:
            stop_all(nodes)

    async def test_a_first_round_of_dead_contacts_asks_more_before_its_timeout(self) -> None:
        """The alpha closest contacts died and nothing tells them apart from live ones:
        while their calls are out longer than a few of the node's round trips, further
        contacts are asked beside them, so a record lookup (wanted=1) finds the record
        before their (here 1 s) soft timeout and suspects nobody.  (Without
        lookup_probe_first_round it waits for that timeout and suspects them.)"""
        cfg = DhtConfig.for_tests(rpc_timeout_min=1.0, rpc_timeout_max=2.0,
                                  lookup_fresh_first=False)
        nodes = await start_network(8, cfg)
        try:
            asker = nodes[-1]
            fid = file_id_of("probe past dead contacts")
            await nodes[1].announce(fid, "probe.bin", 1, grpc="127.0.0.1:1")
            key = file_key(fid)
            dead = closest_to(asker, key, cfg.alpha)
            by_id = {n.protocol.source_node.id: n for n in nodes}
            assert asker.node_id not in {p.id.hex() for p in dead}
            for peer in dead:
                by_id[peer.id].stop()
            asker.store.clear()  # the answer must come from the network
            assert asker.protocol.rtt.typical() > 0
            result = await Lookup(asker.protocol, key, cfg, records=True, wanted=1).run()
            assert len(result.positive()) == 1
            assert result.probed >= 1
            assert set(result.asked[: cfg.alpha]) == {p.id for p in dead}
            assert not any(asker.protocol.is_suspect(p.id) for p in dead)
        finally:
            stop_all(nodes)


    async def test_a_busy_loop_does_not_push_the_first_round_hedge_past_the_timeout(
            self) -> None:
        """As above, but the asker's loop was busy while its last replies came in (it
        blocked 0.3 s twice with 6 pings out, as 20 lookups in flight do on a loaded
        machine): its smoothed round trip grew to ~0.25 s, 3x which is past the dead
        contacts' 0.6 s soft timeout.  The hedge counts from the smallest recent round
        trip instead, so further contacts are still asked long before that timeout.
        (With the smoothed round trip, lookup_probe_min_rtt=False, the first round waits
        for the soft timeout, probes nobody and suspects the dead contacts.)"""
        cfg = DhtConfig.for_tests(rpc_timeout_min=0.6, rpc_timeout_max=2.0,
                                  lookup_fresh_first=False, lookup_probe_min_rtt=True)
        nodes = await start_network(8, cfg)
        try:
            asker = nodes[-1]
            fid = file_id_of("probe past dead contacts on a busy loop")
            await nodes[1].announce(fid, "busy.bin", 1, grpc="127.0.0.1:1")
            key = file_key(fid)
            dead = closest_to(asker, key, cfg.alpha)
            by_id = {n.protocol.source_node.id: n for n in nodes}
            for peer in dead:
                by_id[peer.id].stop()
            dead_ids = {p.id for p in dead}
            live = [p for p in asker.protocol.router.all_contacts() if p.id not in dead_ids]
            assert live
            for _ in range(2):
                pings = [asyncio.ensure_future(asker.protocol.call_ping(p))
                         for p in (live * 6)[:6]]
                await asyncio.sleep(0)  # the pings are sent ...
                time.sleep(0.3)  # noqa: ASYNC251 (the loop is busy while they are answered)
                assert all(await asyncio.gather(*pings))
            rtt = asker.protocol.rtt
            assert cfg.lookup_hedge_factor * rtt.typical() > cfg.rpc_timeout_min
            assert 0 < rtt.recent_min() < 0.1
            asker.store.clear()
            result = await Lookup(asker.protocol, key, cfg, records=True, wanted=1).run()
            assert len(result.positive()) == 1
            assert result.probed >= 1
            stats = asker.protocol.stats  # the counters /metrics shows
            assert stats["lookup_first_round_hedges"] >= 1 and stats["lookup_hedges"] >= 1
            assert stats["lookup_soft_timeouts"] == 0
            assert set(result.asked[: cfg.alpha]) == dead_ids
            assert not any(asker.protocol.is_suspect(i) for i in dead_ids)
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
