"""Microbenchmark: neighbour searches with the XOR index vs. a full sort (issue 11 item 4).

Fills a real ``dht.routing.RoutingTable`` the way a node in an N-node network sees it
(N random ids offered, splits and replacement lists as upstream does them), then times

* ``find_neighbors`` (k closest to a random target) against the old approach, which
  sorted every contact per request;
* a membership change (remove + re-add one contact) including the index upkeep, against
  the old approach, which rebuilt the whole id index after any change;
* one step of the lookup loop picking the k closest live nodes out of M known ones
  (``DistanceOrder.first``) against sorting all of them with a Python key.

Prints microseconds per operation and the ratio old/new from one run (machine noise
cancels in the ratio more than in the absolute figures).  Results are compared for
equality before timing.

    nice -n 10 .venv/bin/python benchmarks/neighbors_bench.py [N ...]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable

from dht import DhtConfig
from dht.nearest import DistanceOrder
from dht.protocol import KadshareProtocol
from dht.routing import KadNode
from dht.storage import RecordStore


def per_call(fn: Callable[[], object], repeat: int) -> float:
    """Microseconds per call, best of 3 batches of ``repeat``."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / repeat * 1e6


def naive_find(table, target: KadNode, k: int) -> list:
    """The pre-index find_neighbors: rebuild the id map, sort every contact."""
    by_long = {n.long_id: n for b in table.buckets for n in b.nodes.values()}
    ranked = sorted(by_long, key=target.long_id.__xor__)
    return [by_long[i] for i in ranked if i != target.long_id][:k]


async def table_case(n: int, rng: random.Random) -> None:
    cfg = DhtConfig()
    me = KadNode(rng.getrandbits(160).to_bytes(20, "big"), "127.0.0.1", 1)
    proto = KadshareProtocol(me, RecordStore(cfg), cfg)
    table = proto.router
    try:
        for i in range(n):
            host = f"10.{(i >> 8) & 255}.{i & 255}.1"  # one /24 each: no prefix cap
            table.add_contact(KadNode(rng.getrandbits(160).to_bytes(20, "big"), host, 4000))
        targets = [KadNode(rng.getrandbits(160).to_bytes(20, "big")) for _ in range(64)]
        for t in targets:
            assert table.find_neighbors(t, cfg.k) == naive_find(table, t, cfg.k)
        it = iter(range(10**9))
        new = per_call(lambda: table.find_neighbors(targets[next(it) % 64], cfg.k), 2000)
        old = per_call(lambda: naive_find(table, targets[next(it) % 64], cfg.k), 500)
        # one membership change then one search; the old code rebuilt its id map and
        # sorted everything; here both variants pay today's remove/add (with the index
        # upkeep and the integer Bucket.depth), so "old" is a lower bound of the old cost
        contacts = table.all_contacts()

        def churn(find: Callable[[KadNode], object]) -> Callable[[], None]:
            def step() -> None:
                c = contacts[next(it) % len(contacts)]
                table.remove_contact(c)
                table.add_contact(c)
                find(targets[0])
            return step

        churn_n = per_call(churn(lambda t: table.find_neighbors(t, cfg.k)), 500)
        churn_o = per_call(churn(lambda t: naive_find(table, t, cfg.k)), 500)
        print(f"N={n:>6} contacts={len(table):>4} buckets={len(table.buckets):>3}  "
              f"find_neighbors old {old:7.1f} us  new {new:6.1f} us  x{old / new:4.1f}  |  "
              f"change+find old {churn_o:6.1f} us  new {churn_n:6.1f} us  "
              f"x{churn_o / churn_n:4.1f}")
    finally:
        proto.close()


def lookup_case(known: int, rng: random.Random, k: int = 20) -> None:
    target = rng.getrandbits(160)
    order = DistanceOrder(target)
    state: dict[bytes, str] = {}
    longs: dict[bytes, int] = {}
    for _ in range(known):
        nid = rng.getrandbits(160).to_bytes(20, "big")
        longs[nid] = int.from_bytes(nid, "big")
        order.add(nid, longs[nid])
        state[nid] = rng.choice(["new", "done", "done", "failed", "slow", "inflight"])

    def dist(i: bytes) -> int:
        return longs[i] ^ target

    def naive() -> list[bytes]:
        live = [i for i, s in state.items() if s not in ("failed", "slow")]
        live.sort(key=dist)
        return live[:k]

    def indexed() -> list[bytes]:
        return order.first(k, lambda i: state[i] not in ("failed", "slow"))

    assert naive() == indexed()
    old = per_call(naive, 300)
    new = per_call(indexed, 3000)
    print(f"lookup step, {known:>4} known nodes: sort-all {old:7.1f} us  "
          f"indexed {new:6.1f} us  x{old / new:4.1f}")


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1_000, 10_000]
    rng = random.Random(4)
    for n in sizes:
        asyncio.run(table_case(n, rng))
    for known in (60, 200, 600):
        lookup_case(known, rng)


if __name__ == "__main__":
    main(sys.argv[1:])
