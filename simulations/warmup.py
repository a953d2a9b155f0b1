"""Direct warm-up: routing tables filled from the known ids instead of N real joins.

A network that has run for a while converges to routing tables in which bucket ``i`` of
node ``x`` holds up to k of the nodes whose id first differs from ``x``'s at bit ``i``
(the paper's invariant, which refresh and traffic maintain).  Reaching that state with
real joins costs one lookup and a round of id proofs per node, which at 10,000 virtual
nodes was 71 % of the wall time of a short run and is not what an experiment about
churn wants to measure.  ``--warmup direct`` starts every initial node alone and hands
it such a table (k random picks per bucket range, from the seeded engine RNG); the
initial announces, every later join and everything during the measured run are real.

Ids sorted as integers make each bucket range a contiguous slice, so building all
tables costs O(N log N) comparisons plus k picks per non-empty bucket.
"""

from __future__ import annotations

import bisect
import random

__all__ = ["ID_BITS", "converged_contacts"]

ID_BITS = 160


def converged_contacts(ids: dict[int, bytes], k: int, rng: random.Random
                       ) -> dict[int, list[int]]:
    """For each node number, the node numbers of a converged routing table: for every
    bit position ``b``, up to ``k`` random nodes whose id shares the first ``b`` bits
    with the node's id and differs at bit ``b`` (all of them when fewer exist).

    Ids must be distinct and ``ID_BITS`` long; node numbers are returned farthest
    bucket first, which is the order that lets a splitting table take them all.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    order = sorted(ids, key=lambda idx: ids[idx])
    values = [int.from_bytes(ids[idx], "big") for idx in order]
    if len(set(values)) != len(values):
        raise ValueError("node ids must be distinct")
    out: dict[int, list[int]] = {}
    for idx in order:
        me = int.from_bytes(ids[idx], "big")
        picks: list[int] = []
        for bit in range(ID_BITS):
            shift = ID_BITS - 1 - bit
            # The ids sharing my first `bit` bits and differing at bit `bit` form the
            # interval [lo, lo + 2**shift) with lo = my prefix with that bit flipped.
            lo = ((me >> shift) ^ 1) << shift
            a = bisect.bisect_left(values, lo)
            b = bisect.bisect_left(values, lo + (1 << shift))
            if b - a > k:
                chosen = rng.sample(range(a, b), k)
            else:
                chosen = list(range(a, b))
            picks.extend(order[i] for i in chosen)
            # Stop once no other id shares my next prefix: deeper buckets are empty.
            mine_lo = (me >> shift) << shift
            if (bisect.bisect_left(values, mine_lo + (1 << shift))
                    - bisect.bisect_left(values, mine_lo)) <= 1:
                break
        out[idx] = picks
    return out
