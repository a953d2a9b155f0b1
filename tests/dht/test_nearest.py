"""The indexed neighbour searches return exactly what a full sort returns (issue 11 item 4).

The routing table and the lookup no longer sort every contact per request; these tests
drive them with random tables, random membership churn and random lookup states, and
compare each answer with the naive ranking the code used before.
"""

from __future__ import annotations

import asyncio
import random

from kademlia.routing import KBucket

from dht import DhtConfig
from dht.nearest import DistanceOrder, XorIndex
from dht.protocol import KadshareProtocol
from dht.routing import Bucket, KadNode
from dht.storage import RecordStore

BITS = 160


def naive_closest(ids: list[int], target: int) -> list[int]:
    return sorted(ids, key=lambda i: i ^ target)


def clustered_ids(rng: random.Random, count: int) -> list[int]:
    """Ids sharing long prefixes (a few tight clusters), the trie walk's deep case."""
    out: set[int] = set()
    while len(out) < count:
        prefix = rng.choice([0, 1, 2**BITS - 1, rng.getrandbits(BITS)])
        out.add(prefix ^ rng.getrandbits(rng.choice([3, 8, 40, BITS])))
    return list(out)


class TestXorIndex:
    def test_matches_a_full_sort_on_random_and_clustered_ids(self) -> None:
        rng = random.Random(11)
        for trial in range(60):
            count = rng.choice([0, 1, 2, 23, 24, 25, 100, 700])
            ids = (clustered_ids(rng, count) if trial % 2
                   else list({rng.getrandbits(BITS) for _ in range(count)}))
            index: XorIndex[int] = XorIndex()
            index.reset({i: i for i in ids})
            targets = [rng.getrandbits(BITS), 0, 2**BITS - 1, *rng.sample(ids, min(3, len(ids)))]
            for target in targets:
                assert list(index.closest(target)) == naive_closest(ids, target)

    def test_replace_range_keeps_the_rest(self) -> None:
        rng = random.Random(12)
        ids = list({rng.getrandbits(BITS) for _ in range(300)})
        index: XorIndex[int] = XorIndex()
        index.reset({i: i for i in ids})
        lo, hi = sorted((rng.getrandbits(BITS), rng.getrandbits(BITS)))
        fresh = {rng.randint(lo, hi) for _ in range(7)}
        index.replace_range(lo, hi, {i: i for i in fresh})
        expected = [i for i in ids if not lo <= i <= hi] + list(fresh)
        assert len(index) == len(expected)
        target = rng.getrandbits(BITS)
        assert list(index.closest(target)) == naive_closest(expected, target)


def peer(rng: random.Random, port: int) -> KadNode:
    return KadNode(rng.getrandbits(BITS).to_bytes(20, "big"), "127.0.0.1", port)


def naive_neighbors(table, target: KadNode, k: int, exclude: KadNode | None) -> list[KadNode]:
    """What find_neighbors returned before: every contact ranked by a full sort."""
    every = [n for b in table.buckets for n in b.nodes.values()]
    every.sort(key=lambda n: n.long_id ^ target.long_id)
    return [n for n in every if n.long_id != target.long_id
            and (exclude is None or not n.same_home_as(exclude))][:k]


class TestRoutingTable:
    async def test_find_neighbors_matches_the_naive_ranking_through_churn(self) -> None:
        rng = random.Random(13)
        cfg = DhtConfig.for_tests()
        me = peer(rng, 1)
        proto = KadshareProtocol(me, RecordStore(cfg), cfg)
        table = proto.router
        added: list[KadNode] = []
        try:
            for step in range(3000):
                if added and rng.random() < 0.3:
                    table.remove_contact(added.pop(rng.randrange(len(added))))
                else:
                    node = peer(rng, 1000 + step % 50)  # shared addresses test `exclude`
                    table.add_contact(node)
                    added.append(node)
                if step % 50 == 0:
                    # full buckets ping their head; with no socket the ping fails, which
                    # may drop contacts from inside the protocol: more churn to follow
                    await asyncio.sleep(0)
                if step % 7 == 0:
                    target = rng.choice([peer(rng, 9), me, *added[-1:]])
                    exclude = rng.choice([None, *added[-3:]])
                    k = rng.choice([1, cfg.k, 3 * cfg.k])
                    got = table.find_neighbors(target, k, exclude=exclude)
                    assert got == naive_neighbors(table, target, k, exclude)
            every = {n.id for b in table.buckets for n in b.nodes.values()}
            assert {n.id for n in table.all_contacts()} == every
            assert len(table) == len(every) > cfg.k  # the walk really crossed buckets
            assert len(table.buckets) > 3
        finally:
            proto.close()


class TestDistanceOrder:
    def test_first_matches_sorting_all_known_nodes(self) -> None:
        rng = random.Random(14)
        target = rng.getrandbits(BITS)
        order = DistanceOrder(target)
        state: dict[bytes, str] = {}
        for _ in range(400):
            node_id = rng.getrandbits(BITS).to_bytes(20, "big")
            if node_id not in state:
                order.add(node_id, int.from_bytes(node_id, "big"))
            state[node_id] = rng.choice(["new", "inflight", "slow", "done", "failed"])
            for wanted in (("new", "inflight", "done"), ("done",)):
                naive = sorted((i for i, s in state.items() if s in wanted),
                               key=lambda i: int.from_bytes(i, "big") ^ target)[:20]
                assert order.first(20, lambda i, w=wanted: state[i] in w) == naive


class TestBucketDepth:
    def test_depth_matches_upstream_bit_strings(self) -> None:
        rng = random.Random(15)
        for _ in range(200):
            ids = clustered_ids(rng, rng.choice([1, 2, 5, 20]))
            ours, theirs = Bucket(0, 2**BITS, 20), KBucket(0, 2**BITS, 20)
            for i, long_id in enumerate(ids):
                node = KadNode(long_id.to_bytes(20, "big"), "127.0.0.1", 1000 + i)
                ours.add_node(node)
                theirs.add_node(node)
            assert ours.depth() == theirs.depth()
