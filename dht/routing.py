"""Routing table: kademlia's KBucket/RoutingTable with three defects fixed.

* ``find_neighbors``: upstream walks buckets outward through ``TableTraverser``, which
  stops as soon as the right-hand side is exhausted while it is on a "right" turn, so
  left buckets are never visited and a lookup can start with no contacts although the
  table holds dozens (about 3 % of puts lost at 256 nodes).  Here contacts come out in
  exact XOR order from ``nearest.XorIndex``, which the table keeps current per bucket.
* ``get_bucket_for``: upstream compares ``long_id < range[1]`` although a bucket's range
  is inclusive, so an id equal to a bucket's upper bound lands in the next bucket.
* bucket timestamps (``last_updated``) come from ``clock.now()``, the loop's clock,
  where upstream ``KBucket`` read ``time.monotonic()`` (a virtual-time loop would see
  every bucket as fresh or as stale forever);
* bucket refresh age comes from ``DhtConfig.refresh_interval`` instead of a literal
  3600 s, and a bucket admits at most ``max_contacts_per_prefix`` contacts from one
  /24 (IPv4) or /48 (IPv6) network, loopback exempt unless ``prefix_cap_on_loopback``.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import sys
from dataclasses import dataclass
from typing import Any

from kademlia.node import Node
from kademlia.routing import KBucket
from kademlia.routing import RoutingTable as _UpstreamRoutingTable

from . import clock
from .config import DhtConfig
from .nearest import XorIndex


@dataclass(frozen=True, slots=True)
class Contact:
    """A routing-table entry as the public API shows it."""

    node_id: str
    host: str
    port: int


class KadNode:
    """A contact with kademlia's ``Node`` interface, but ``__slots__`` and interned hosts.

    Upstream ``Node`` keeps a ``__dict__`` per contact; at a few hundred contacts per
    node and thousands of nodes per simulation that dominates memory.  kademlia's
    ``KBucket`` and ``RoutingTable`` only use the attributes and methods below.
    """

    __slots__ = ("id", "ip", "port", "long_id")

    def __init__(self, node_id: bytes, ip: str | None = None, port: int | None = None
                 ) -> None:
        self.id = node_id
        self.ip = sys.intern(ip) if ip is not None else None
        self.port = port
        self.long_id = int.from_bytes(node_id, "big")

    def same_home_as(self, node: Any) -> bool:
        return self.ip == node.ip and self.port == node.port

    def distance_to(self, node: Any) -> int:
        return self.long_id ^ node.long_id

    def __iter__(self) -> Any:
        return iter((self.id, self.ip, self.port))

    def __repr__(self) -> str:
        return f"KadNode({self.id.hex()[:8]} {self.ip}:{self.port})"

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@functools.lru_cache(maxsize=65536)
def address_prefix(host: str) -> str | None:
    """The /24 or /48 network of ``host``; None for loopback or a non-IP host.

    Cached: the prefix cap asks this for every contact of a bucket on every admission,
    and ``ipaddress`` parsing cost ~100 us a call (benchmarks/neighbors_bench.py)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 4:
        return str(ipaddress.ip_network(f"{host}/24", strict=False))
    return str(ipaddress.ip_network(f"{host}/48", strict=False))


@functools.lru_cache(maxsize=65536)
def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Bucket(KBucket):
    """Upstream ``KBucket`` whose ``last_updated`` follows the DHT clock (``clock.now``)."""

    pinged_at = -1e18  # when the head was last pinged for a newcomer (RoutingTable)

    def touch_last_updated(self) -> None:
        self.last_updated = clock.now()

    def depth(self) -> int:
        """Length of the id prefix all contacts share (paper 4.2's split rule).

        Upstream builds a 160-character bit string per contact for this on every
        admission into a full bucket: 85 % of ``add_contact``'s time in a 10,000-id
        table (benchmarks/neighbors_bench.py).  For fixed-width ids the prefix all share
        is the one the smallest and the largest share.
        """
        ids = [n.long_id for n in self.nodes.values()]
        if not ids:
            return 0
        return len(next(iter(self.nodes.values())).id) * 8 - (max(ids) ^ min(ids)).bit_length()

    def split(self) -> tuple[Bucket, Bucket]:
        # upstream builds the halves as plain KBuckets and lets replacements in; here
        # replacements stay candidates (RoutingTable promotes them once proven)
        low, high = self.range
        midpoint = (low + high) // 2
        one = Bucket(low, midpoint, self.ksize)
        two = Bucket(midpoint + 1, high, self.ksize)
        for node in self.nodes.values():
            (one if node.long_id <= midpoint else two).add_node(node)
        for node in self.replacement_nodes.values():
            (one if node.long_id <= midpoint else two).add_candidate(node)
        return one, two

    def add_candidate(self, node: Node) -> None:
        """Remember ``node`` as a replacement (newest last), not as a contact."""
        self.replacement_nodes.pop(node.id, None)
        self.replacement_nodes[node.id] = node
        while len(self.replacement_nodes) > self.max_replacement_nodes:
            self.replacement_nodes.popitem(last=False)

    def remove_node(self, node: Node) -> None:
        """Upstream promoted the newest replacement into the freed slot at once; here
        the table does, after the candidate proved its id (``RoutingTable.fill_slot``)."""
        self.replacement_nodes.pop(node.id, None)
        self.nodes.pop(node.id, None)

    def has_room(self) -> bool:
        return len(self.nodes) < self.ksize


class RoutingTable(_UpstreamRoutingTable):
    """Upstream table with correct neighbour search, bucket choice and prefix cap."""

    def __init__(self, protocol: Any, ksize: int, node: Node, config: DhtConfig) -> None:
        self.config = config
        self._index: XorIndex[Node] = XorIndex()
        self._indexed: list[KBucket] | None = None  # the bucket list _index reflects
        self._indexed_count = 0
        super().__init__(protocol, ksize, node)
        self.rejected_by_prefix = 0
        self.rejected_address_change = 0

    def flush(self) -> None:
        self.buckets = [Bucket(0, 2**160, self.ksize)]
        self._uppers = [2**160]
        self._indexed = None

    def split_bucket(self, index: int) -> None:
        lo, hi = self.buckets[index].range
        super().split_bucket(index)
        self._uppers = [b.range[1] for b in self.buckets]
        self._resync(lo, hi)
        for half in self.buckets[index:index + 2]:
            self.fill_slot(half)

    def _contacts(self) -> XorIndex[Node]:
        """The index of all contacts; rebuilt in full only if the buckets were replaced
        from outside (tests do), otherwise kept current range by range (``_resync``)."""
        if self._indexed is not self.buckets or self._indexed_count != len(self.buckets):
            self._index.reset(
                {n.long_id: n for bucket in self.buckets for n in bucket.nodes.values()}
            )
            self._indexed = self.buckets
            self._indexed_count = len(self.buckets)
        return self._index

    def _resync(self, lo: int, hi: int) -> None:
        """Re-read the contacts of the buckets covering ``[lo, hi]`` (one old bucket's
        range) after upstream code changed them: a few dozen contacts, not the table."""
        if self._indexed is not self.buckets:
            return  # a full rebuild is pending anyway
        if len(self._uppers) != len(self.buckets):
            self._uppers = [b.range[1] for b in self.buckets]
        last = len(self.buckets) - 1
        first = min(bisect.bisect_left(self._uppers, lo), last)
        end = min(bisect.bisect_left(self._uppers, hi), last)
        self._index.replace_range(lo, hi, {
            n.long_id: n for b in self.buckets[first:end + 1] for n in b.nodes.values()
        })
        self._indexed_count = len(self.buckets)

    def get_bucket_for(self, node: Node) -> int:
        if len(self._uppers) != len(self.buckets):  # buckets replaced from outside
            self._uppers = [b.range[1] for b in self.buckets]
        return min(bisect.bisect_left(self._uppers, node.long_id), len(self.buckets) - 1)

    def lonely_buckets(self) -> list[KBucket]:
        cutoff = clock.now() - self.config.refresh_interval
        return [b for b in self.buckets if b.last_updated < cutoff]

    def add_contact(self, node: Node) -> None:
        bucket = self.buckets[self.get_bucket_for(node)]
        known = bucket.nodes.get(node.id)
        if known is not None and (known.ip, known.port) != (node.ip, node.port):
            # ids are not authenticated at this layer: anyone can answer a probe with a
            # known id. The first verified address keeps the id until it stops answering
            # (remove_contact), so a stranger cannot redirect a contact to itself.
            self.rejected_address_change += 1
            return
        if known is not None:
            bucket.add_node(node)  # seen again: move to the tail (most recently seen)
            return
        if not self._prefix_allows(bucket, node):
            self.rejected_by_prefix += 1
            return
        lo, hi = bucket.range
        self._add_new(bucket, node)
        self._resync(lo, hi)

    def known_elsewhere(self, node: Node) -> Node | None:
        """The contact held for ``node.id`` when it is at another address, else None."""
        known = self.buckets[self.get_bucket_for(node)].nodes.get(node.id)
        if known is not None and (known.ip, known.port) != (node.ip, node.port):
            return known
        return None

    def _add_new(self, bucket: KBucket, node: Node) -> None:
        """Upstream's insertion (split per paper §4.2); a newcomer that finds the bucket
        full waits as a replacement while the least-recently-seen contact is checked."""
        if bucket.add_node(node):
            return
        if self._splits(bucket):
            self.split_bucket(self.get_bucket_for(node))
            self.add_contact(node)
            return
        self._check_head(bucket)

    def _splits(self, bucket: KBucket) -> bool:
        return bool(bucket.has_in_range(self.node)) or bucket.depth() % 5 != 0

    def _check_head(self, bucket: KBucket) -> None:
        """Ping a full bucket's least-recently-seen contact for a newcomer, at most once
        per ``full_bucket_ping_interval`` (upstream pinged it for every newcomer)."""
        now = clock.now()
        if now - getattr(bucket, "pinged_at", -1e18) >= self.config.full_bucket_ping_interval:
            bucket.pinged_at = now
            self.protocol.ping_bucket_head(bucket.head())

    def could_enter(self, node: Node) -> bool:
        """Whether ``node`` would become a contact now (its bucket has room or splits),
        rather than wait as a replacement: only then is its id worth a proof now."""
        bucket = self.buckets[self.get_bucket_for(node)]
        return node.id in bucket.nodes or bucket.has_room() or self._splits(bucket)

    def note_candidate(self, node: Node) -> None:
        """An unproven node whose bucket is full: keep it as a replacement, to be proven
        only when a slot frees (``fill_slot``), and check the bucket's oldest contact."""
        bucket = self.buckets[self.get_bucket_for(node)]
        if node.id in bucket.nodes:
            return
        bucket.add_candidate(node)
        self._check_head(bucket)

    def fill_slot(self, bucket: KBucket) -> None:
        """A slot of ``bucket`` is free: offer it to the newest replacement, which the
        protocol admits once it proved its id (at once if it did so before)."""
        if self.protocol is None or not bucket.has_room() or not bucket.replacement_nodes:
            return
        _, node = bucket.replacement_nodes.popitem()
        self.protocol.offer_slot(node)

    def remove_contact(self, node: Node) -> None:
        """Drop a contact that failed, only if it failed at the address we hold for it."""
        bucket = self.buckets[self.get_bucket_for(node)]
        known = bucket.nodes.get(node.id)
        if known is not None and (known.ip, known.port) != (node.ip, node.port):
            return  # a timeout at an address someone else advertised says nothing of it
        super().remove_contact(node)
        self._resync(*bucket.range)
        self.fill_slot(bucket)

    def _prefix_allows(self, bucket: KBucket, node: Node) -> bool:
        if is_loopback(node.ip) and not self.config.prefix_cap_on_loopback:
            return True
        prefix = address_prefix(node.ip)
        if prefix is None:
            return True
        same = sum(1 for n in bucket.nodes.values() if address_prefix(n.ip) == prefix)
        return same < self.config.max_contacts_per_prefix

    def find_neighbors(self, node: Node, k: int | None = None,
                       exclude: Node | None = None) -> list[Node]:
        """The k contacts closest to ``node`` by XOR distance, over every bucket."""
        k = k or self.ksize
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        out = []
        for n in self._contacts().closest(node.long_id):
            if n.long_id == node.long_id or (exclude is not None and n.same_home_as(exclude)):
                continue
            out.append(n)
            if len(out) >= k:
                break
        return out

    def handoff_limit(self, key: Node, my_distance: int, k: int,
                      newcomers: set[bytes]) -> int | None:
        """For the handoff of ``key``'s records (paper §2.5): 0 when a known contact
        other than ``newcomers`` is closer to the key than we are (the handoff is theirs);
        else the distance of the k-th closest such contact, within which a newcomer is
        one of the key's k closest (None: fewer than k known, every newcomer is).

        Walks the XOR order lazily, so the common case (someone is closer) stops at the
        first contact instead of ranking k of them.  Touches the key's bucket as
        ``find_neighbors`` does.
        """
        self.buckets[self.get_bucket_for(key)].touch_last_updated()
        target = key.long_id
        seen = 0
        for n in self._contacts().closest(target):
            if n.long_id == target or n.id in newcomers:
                continue
            distance = n.long_id ^ target
            if seen == 0 and my_distance >= distance:
                return 0
            seen += 1
            if seen >= k:
                return distance
        return None

    def all_contacts(self) -> list[Node]:
        return self._contacts().items()

    def contains(self, node_id: bytes) -> bool:
        probe = KadNode(node_id)
        return node_id in self.buckets[self.get_bucket_for(probe)].nodes

    def __len__(self) -> int:
        return len(self._contacts())
