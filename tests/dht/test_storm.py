"""The storm fix of issue 11: nodes that joined together do not run their periodic jobs
in step, and a node whose RPCs mostly time out backs off instead of probing more."""

from __future__ import annotations

import asyncio
import random
import socket

from dht import DhtConfig, DhtNode, clock
from dht.lookup import Lookup
from dht.node import next_wait
from dht.routing import KadNode

from .netutil import eventually


async def test_nodes_started_together_spread_their_refresh_and_republish() -> None:
    config = DhtConfig.for_tests()
    with clock.use_rng(random.Random(11)):
        nodes = [DhtNode(config=config) for _ in range(20)]
        for node in nodes:
            await node.listen(0, "127.0.0.1")
    try:
        assert await eventually(_async(lambda: all(n.schedule for n in nodes)), 20, 0.05)
        for job, interval in (("refresh", config.refresh_interval),
                              ("republish", config.republish_interval)):
            due = [n.schedule[job] for n in nodes]
            # the old 10 % jitter kept every first run within 0.1 x interval
            assert max(due) - min(due) > 0.3 * interval, job
    finally:
        for node in nodes:
            node.stop()


def test_waits_keep_the_configured_mean_and_republish_is_never_late() -> None:
    with clock.use_rng(random.Random(5)):
        waits = [next_wait(20.0, 0.5) for _ in range(2000)]
        republish = [next_wait(10.0, 0.5, never_late=True) for _ in range(2000)]
    assert 15.0 <= min(waits) and max(waits) <= 25.0
    assert 19.5 < sum(waits) / len(waits) < 20.5
    assert max(republish) <= 10.0 and min(republish) >= 5.0


def _async(fn):
    async def check() -> bool:
        return fn()
    return check


async def test_a_node_whose_calls_time_out_backs_off_and_recovers() -> None:
    config = DhtConfig.for_tests(rpc_timeout_max=0.2, rpc_timeout_min=0.05,
                                 rpc_timeout_initial=0.1, backoff_min_calls=8,
                                 refresh_interval=0.5)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    a, b = DhtNode(config=config), DhtNode(config=config)
    await a.listen(0, "127.0.0.1")
    await b.listen(0, "127.0.0.1")
    try:
        assert a.protocol is not None and b.protocol is not None
        dead = silent.getsockname()
        assert await b.bootstrap([("127.0.0.1", a.port)]) == 1
        answers = await asyncio.gather(*(a.protocol.ping_address(dead) for _ in range(12)))
        assert answers == [None] * 12
        assert a.protocol.backing_off() and a.protocol.timeout_share() > 0.5
        # the periodic refresh is skipped rather than adding lookups
        assert await eventually(
            _async(lambda: a.protocol.stats["refresh_backed_off"] >= 1), 40, 0.1)
        # an unknown requester is not probed while backing off
        c = DhtNode(config=config)
        await c.listen(0, "127.0.0.1")
        try:
            assert c.protocol is not None
            sent = a.protocol.stats["requests_out"]
            await c.protocol.ping_address(("127.0.0.1", a.port))
            assert a.protocol.stats["probes_backed_off"] >= 1
            assert a.protocol.stats["requests_out"] == sent
        finally:
            c.stop()
        # answers bring the share down and the node back to normal
        for _ in range(30):
            await a.protocol.ping_address(("127.0.0.1", b.port))
        assert not a.protocol.backing_off()
    finally:
        a.stop()
        b.stop()
        silent.close()


async def test_refresh_skips_the_own_id_lookup_while_neighbours_keep_that_bucket_fresh() -> None:
    """A neighbour's lookup of an id near ours touches the bucket around our id, so our
    refresh wave leaves it out; once that bucket goes stale, the wave looks it up."""
    config = DhtConfig.for_tests()
    a, b = DhtNode(config=config), DhtNode(config=config)
    try:
        for node in (a, b):
            await node.listen(0, "127.0.0.1")
        a.prefill([(b.identity.node_id, ("127.0.0.1", b.port))])
        b.prefill([(a.identity.node_id, ("127.0.0.1", a.port))])
        await asyncio.wait_for(Lookup(b.protocol, a.identity.node_id, config).run(), 10)
        served = b.stats["requests_in"]
        await asyncio.wait_for(a._refresh(), 10)
        assert b.stats["requests_in"] == served  # bucket fresh: no lookup at all
        for bucket in a.protocol.router.buckets:  # an interval without traffic
            bucket.last_updated -= config.refresh_interval + 1
        await asyncio.wait_for(a._refresh(), 10)
        assert b.stats["requests_in"] > served
    finally:
        a.stop()
        b.stop()


def _far_half_nodes(config: DhtConfig, me: DhtNode, count: int) -> list[DhtNode]:
    """``count`` nodes whose ids lie in the half of the id space ``me`` does not."""
    top = me.identity.node_id[0] >> 7
    out: list[DhtNode] = []
    for _ in range(64):
        node = DhtNode(config=config)
        if node.identity.node_id[0] >> 7 != top:
            out.append(node)
            if len(out) == count:
                return out
    raise AssertionError("no far ids in 64 draws")


async def test_a_stale_bucket_is_refreshed_by_one_request_to_its_oldest_contact() -> None:
    """A lookup into a stale bucket asked ~20-40 nodes; one find_node to the bucket's
    least-recently-seen contact is enough to learn it still answers, and the contacts
    its answer names may take the bucket's free slots once they prove their ids."""
    config = DhtConfig.for_tests()
    a = DhtNode(config=config)
    b, c = _far_half_nodes(config, a, 2)
    try:
        for node in (a, b, c):
            await node.listen(0, "127.0.0.1")
        assert a.protocol is not None
        a.prefill([(b.identity.node_id, ("127.0.0.1", b.port))])
        b.prefill([(c.identity.node_id, ("127.0.0.1", c.port))])
        router = a.protocol.router
        router.split_bucket(0)  # one bucket around a's id, one holding b
        far = router.buckets[router.get_bucket_for(KadNode(b.identity.node_id))]
        own = router.buckets[router.get_bucket_for(KadNode(a.identity.node_id))]
        assert far is not own and list(far.nodes) == [b.identity.node_id]
        far.last_updated -= config.refresh_interval + 1
        served_b, served_c = b.stats["requests_in"], c.stats["requests_in"]
        await asyncio.wait_for(a._refresh(), 10)
        assert b.stats["requests_in"] == served_b + 1  # one find_node, not a lookup
        assert a.stats["refresh_probes"] == 1 and a.stats["lookups_refresh"] == 0
        assert far.last_updated > clock.now() - 1  # fresh again
        # c, named in b's answer, proves its id and takes a free slot of that bucket
        assert await eventually(
            _async(lambda: router.contains(c.identity.node_id)), 40, 0.05)
        assert c.stats["requests_in"] > served_c
    finally:
        for node in (a, b, c):
            node.stop()


async def test_a_refresh_probe_that_gets_no_answer_counts_a_miss_and_keeps_the_bucket_stale(
) -> None:
    config = DhtConfig.for_tests(rpc_timeout_max=0.3, rpc_timeout_min=0.05,
                                 rpc_timeout_initial=0.1)
    a = DhtNode(config=config)
    (b,) = _far_half_nodes(config, a, 1)
    try:
        for node in (a, b):
            await node.listen(0, "127.0.0.1")
        assert a.protocol is not None
        a.prefill([(b.identity.node_id, ("127.0.0.1", b.port))])
        b.stop()  # gone without a word
        router = a.protocol.router
        router.split_bucket(0)
        far = router.buckets[router.get_bucket_for(KadNode(b.identity.node_id))]
        far.last_updated -= config.refresh_interval + 1
        stale_since = far.last_updated
        await asyncio.wait_for(a._refresh(), 10)
        assert a.stats["refresh_probes"] == 1 and a.stats["timeouts"] == 1
        assert a.protocol.is_suspect(b.identity.node_id)  # other lookups skip it now
        assert far.last_updated == stale_since  # still stale: the next wave tries again
    finally:
        a.stop()
        b.stop()
