"""Direct warm-up: routing tables filled from the known ids instead of N real joins.

A network that has run for a while converges to routing tables in which every bucket
holds up to k of the nodes of its id range (the paper's invariant, which refresh and
traffic maintain; ``converged_contacts`` says which ranges).  Reaching that state with
real joins costs one lookup and a round of id proofs per node, which at 10,000 virtual
nodes was 71 % of the wall time of a short run and is not what an experiment about
churn wants to measure.  ``--warmup direct`` starts every initial node alone and hands
it such a table (k random picks per bucket range, from the seeded engine RNG); the
initial announces, every later join and everything during the measured run are real.

Under sharding (simulations/sharded.py) every rank derives every initial node's id
from the seed (``VirtualRunner.node_id``), draws the same tables and prefills its own
nodes; contacts on other ranks are reached through the sharded network.

Ids sorted as integers make each bucket range a contiguous slice, so building all
tables costs O(N log N) comparisons plus k picks per non-empty bucket.
"""

from __future__ import annotations

import bisect
import itertools
import random

__all__ = ["ID_BITS", "PREFILL_K", "converged_contacts", "warmup_rng"]

ID_BITS = 160
PREFILL_K = 20                    # contacts per bucket range (k of both DHTs)


def warmup_rng(seed: int) -> random.Random:
    """The engine's RNG as the direct warm-up finds it: ``converged_contacts`` is its
    first use in a one-process run, so the sharded engine, drawing the same tables on
    every rank from a fresh one, hands every node the table one process would."""
    return random.Random(f"engine/{seed}")


def converged_contacts(ids: dict[int, bytes], k: int, rng: random.Random,
                       digit_bits: int = 5) -> dict[int, list[int]]:
    """For each node number, the node numbers of a converged routing table.

    Both DHTs split a bucket that does not hold the node's own id while its contacts'
    shared prefix is not a multiple of ``digit_bits`` long (paper §4.2, b = 5 in the
    ``kademlia`` package), so the range of ids that first differ from the node's id at
    bit ``b`` ends up as ``2**e`` buckets, ``e = digit_bits - 1 - b % digit_bits``.
    Each such bucket gets up to ``k`` random nodes of its range (all when fewer exist).

    Ids must be distinct and ``ID_BITS`` long; node numbers are returned farthest
    bucket first, each bit's sub-ranges taken in turn: the order in which a table that
    splits only full buckets takes them all.
    """
    if k < 1 or digit_bits < 1:
        raise ValueError("k and digit_bits must be at least 1")
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
            extra = min(shift, digit_bits - 1 - bit % digit_bits)
            part = 1 << (shift - extra)
            parts = []
            for p in range(1 << extra):
                a = bisect.bisect_left(values, lo + p * part)
                b = bisect.bisect_left(values, lo + (p + 1) * part)
                parts.append(rng.sample(range(a, b), k) if b - a > k else range(a, b))
            # Round-robin over the sub-ranges: a table that split only on a full bucket
            # whose contacts all came from one sub-range would stop splitting there.
            picks.extend(order[i] for row in itertools.zip_longest(*parts)
                         for i in row if i is not None)
            # Stop once no other id shares my next prefix: deeper buckets are empty.
            mine_lo = (me >> shift) << shift
            if (bisect.bisect_left(values, mine_lo + (1 << shift))
                    - bisect.bisect_left(values, mine_lo)) <= 1:
                break
        out[idx] = picks
    return out
