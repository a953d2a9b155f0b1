"""The iterative lookup (paper §2.3), rebuilt for churn.

Differences from ``kademlia.crawling.SpiderCrawl`` (rounds of alpha calls that wait for
the slowest, 5 s per lost packet):

* up to alpha requests are in flight at any moment; when one answers, the next closest
  unqueried contact is asked at once;
* a contact that exceeds its adaptive (soft) timeout stops counting as in flight and
  as "live" for the stop rule, so a dead node costs one short timeout; its late answer
  is still used while the lookup runs;
* the lookup ends when the k closest live contacts have all answered, when ``wanted``
  positive records are known, or after ``lookup_timeout``;
* record lookups merge the newest record per slot from every answer (paging through a
  node's records up to ``max_find_pages``), and report which close nodes lacked them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from kademlia.node import Node

from .config import DhtConfig
from .errors import InvalidRecord
from .nearest import DistanceOrder
from .protocol import KadshareProtocol, parse_contacts
from .records import Record, Slot, decode_and_verify, storage_key
from .routing import KadNode
from .transport import RpcError, RpcTimeout

log = logging.getLogger(__name__)



@dataclass
class LookupResult:
    """What one lookup learnt."""

    closest: list[Node] = field(default_factory=list)
    records: dict[Slot, tuple[Record, bytes]] = field(default_factory=dict)
    lacking: list[Node] = field(default_factory=list)
    queried: int = 0
    failed: int = 0
    hedged: int = 0  # calls whose slot went to the next contact before their soft timeout
    probed: int = 0  # of those, hedged before this lookup's first answer
    #: ids of the contacts asked, in the order of their first request
    asked: list[bytes] = field(default_factory=list)

    def positive(self) -> list[Record]:
        """Merged records that are not withdrawals."""
        return [rec for rec, _ in self.records.values() if rec.kind != "w"]


def merge_record(into: dict[Slot, tuple[Record, bytes]], record: Record, raw: bytes) -> bool:
    """Keep the newest record per slot; True if ``record`` is now the one kept."""
    slot = (record.node_id, record.file_id)
    old = into.get(slot)
    if old is None or record.issued_at > old[0].issued_at:
        into[slot] = (record, raw)
        return True
    return False


class _Query:
    __slots__ = ("node", "future", "soft_deadline", "sent_at", "offset", "pages", "seen")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.future: asyncio.Future | None = None
        self.soft_deadline = 0.0
        self.sent_at = 0.0
        self.offset = 0
        self.pages = 0
        self.seen: dict[Slot, float] = {}


class Lookup:
    """One iterative lookup for a node id (``key=None``) or for records under a key."""

    def __init__(self, protocol: KadshareProtocol, target: bytes, config: DhtConfig, *,
                 records: bool = False, wanted: int | None = None) -> None:
        self.protocol = protocol
        self.config = config
        self.target = KadNode(target)
        self.records = records
        self.wanted = wanted
        self.result = LookupResult()
        self._state: dict[bytes, str] = {}  # new | inflight | hedged | slow | done | failed
        self._nodes: dict[bytes, Node] = {}
        self._queries: dict[asyncio.Future, _Query] = {}
        self._positive = 0
        self._seen: dict[bytes, dict[Slot, float]] = {}
        self._skipped: set[bytes] = set()
        self._revived: set[bytes] = set()  # skipped suspects asked after all
        self._order = DistanceOrder(self.target.long_id)  # every known node, nearest first
        self._slowest = 0.0  # longest round trip answered in this lookup (0: none yet)

    def _push(self, nodes: list[Node]) -> None:
        me = self.protocol.source_node.id
        for node in nodes:
            if node.id != me and node.id not in self._nodes:
                self._nodes[node.id] = node
                self._order.add(node.id, node.long_id)
                self._state[node.id] = "new"
                if self.protocol.is_suspect(node.id):
                    self._state[node.id] = "slow"
                    self._skipped.add(node.id)

    def _dist(self, node_id: bytes) -> int:
        return self._nodes[node_id].long_id ^ self.target.long_id

    def _live_closest(self) -> list[bytes]:
        """The k closest known nodes not failed or slow (a walk down ``_order``)."""
        state = self._state
        return self._order.first(self.config.k, lambda i: state[i] not in ("failed", "slow"))

    def _send(self, query: _Query, loop: asyncio.AbstractEventLoop) -> None:
        node = query.node
        if self.records:
            args = [self.protocol.source_node.id, self.target.id, query.offset]
            method = "find_records"
        else:
            args = [self.protocol.source_node.id, self.target.id]
            method = "find_node"
        addr = (node.ip, node.port)
        args = self.protocol.cookie_args(addr, args)
        future, soft = self.protocol.request(addr, method, args)
        query.future = future
        query.sent_at = loop.time()
        query.soft_deadline = query.sent_at + soft
        query.pages += 1
        self._queries[future] = query
        if query.pages == 1:
            self.result.asked.append(node.id)
        self._state[node.id] = "inflight"
        self.result.queried += 1

    async def run(self) -> LookupResult:
        """Run to completion (bounded by ``lookup_timeout``) and return the result."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.lookup_timeout
        self._push(self.protocol.router.find_neighbors(self.target, self.config.k))
        max_queries = self.config.k * self.config.lookup_query_factor
        fresh = self._freshest_outside_first_round()
        if fresh is not None:
            self._send(_Query(self._nodes[fresh]), loop)
        try:
            while True:
                if self.wanted is not None and self._positive >= self.wanted:
                    break
                closest = self._live_closest()
                if all(self._state[i] == "done" for i in closest):
                    if not self._worth_waiting():
                        if not self._queries and self._revive_skipped():
                            continue
                        break
                # only calls not yet hedged hold one of the alpha slots (see _hedge_at)
                now = loop.time()
                active = sum(1 for q in self._queries.values()
                             if self._state[q.node.id] == "inflight")
                # before any answer the lookup fans out to at most 2 * alpha calls
                room = 2 * self.config.alpha - len(self._queries) if not self._slowest \
                    else max_queries
                skipped_now = False
                for node_id in closest:
                    if active >= self.config.alpha or room <= 0 \
                            or self.result.queried >= max_queries:
                        break
                    if self._state[node_id] == "new":
                        if node_id not in self._revived \
                                and self.protocol.is_suspect(node_id):
                            # suspected since this lookup learnt of it (another lookup
                            # of this node saw it miss a timeout): skip it, as _push does
                            self._state[node_id] = "slow"
                            self._skipped.add(node_id)
                            skipped_now = True
                            continue
                        self._send(_Query(self._nodes[node_id]), loop)
                        active += 1
                        room -= 1
                if skipped_now:
                    continue  # the k closest live contacts changed
                if not self._queries:
                    if self._revive_skipped():
                        continue
                    break
                now = loop.time()
                wake = deadline
                for q in self._queries.values():
                    st = self._state[q.node.id]
                    if st == "inflight":
                        wake = min(wake, self._hedge_at(q))
                    elif st == "hedged":
                        wake = min(wake, q.soft_deadline)
                done, _ = await asyncio.wait(
                    list(self._queries), timeout=max(0.0, wake - now),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for future in done:
                    self._finish(self._queries.pop(future), future, loop)
                now = loop.time()
                for query in self._queries.values():
                    st = self._state[query.node.id]
                    if st not in ("inflight", "hedged"):
                        continue
                    if now >= query.soft_deadline:
                        self._state[query.node.id] = "slow"
                        self.protocol.suspect(query.node.id)
                        self.protocol.stats["lookup_soft_timeouts"] += 1
                    elif st == "inflight" and now >= self._hedge_at(query):
                        self._state[query.node.id] = "hedged"
                        self.result.hedged += 1
                        self.protocol.stats["lookup_hedges"] += 1
                        if not self._slowest:
                            self.result.probed += 1
                            self.protocol.stats["lookup_first_round_hedges"] += 1
                if now >= deadline:
                    log.debug("lookup of %s hit lookup_timeout", self.target.id.hex()[:8])
                    break
        finally:
            for future, query in self._queries.items():
                future.add_done_callback(functools.partial(self._late_done, query.node))
            self._queries.clear()
        state = self._state
        responded = self._order.first(self.config.k, lambda i: state[i] == "done")
        self.result.closest = [self._nodes[i] for i in responded]
        if self.records and self.result.records:
            newest = {slot: rec.issued_at for slot, (rec, _) in self.result.records.items()}
            self.result.lacking = [
                self._nodes[i] for i in responded
                if any(self._seen.get(i, {}).get(s) != t for s, t in newest.items())
            ]
        return self.result

    def _freshest_outside_first_round(self) -> bytes | None:
        """The contact of the k closest heard from most recently, if the alpha closest
        were all heard from less recently (or never): it takes one of the first round's
        alpha slots, the alpha - 1 closest the others.

        After a crash wave a node that has not looked anything up since still holds its
        dead contacts; when the alpha closest to a key are all dead the first round waits
        a full soft timeout with nothing to go on.  A contact that answered us after them
        is the best bet to be alive.  Nobody is given up on: the closest contacts are
        asked as before, one of them a slot later.
        """
        if not self.config.lookup_fresh_first or self.config.alpha < 2:
            return None
        state = self._state
        closest = self._order.first(self.config.k, lambda i: state[i] == "new")
        if len(closest) <= self.config.alpha:
            return None
        heard = self.protocol.last_heard
        first = max(heard(i) for i in closest[: self.config.alpha])
        best, best_at = None, first
        for node_id in closest[self.config.alpha:]:
            at = heard(node_id)
            if at > best_at:
                best, best_at = node_id, at
        return best

    def _hedge_at(self, query: _Query) -> float:
        """When ``query`` stops holding one of the lookup's alpha slots, so the next
        contact is asked beside it: once it has been out ``lookup_hedge_factor`` times
        the slowest answer this lookup has had (before any answer: the node's smallest
        recent round trip, ``lookup_probe_min_rtt``, or its smoothed one), at least
        ``lookup_hedge_min``; at the latest at its soft timeout.

        A hedged call is not given up on: it still counts among the k closest for the
        stop rule until its soft timeout, so a slow but live contact keeps its place in
        an announce's replica set (a hedge that gave up on it made announces leave
        replicas out on a loaded machine).  Only the soft timeout marks it slow.
        """
        base = self._slowest
        if not base and self.config.lookup_probe_first_round:
            rtt = self.protocol.rtt
            base = (self.config.lookup_probe_min_rtt and rtt.recent_min()) or rtt.typical()
        if not base:
            return query.soft_deadline
        cfg = self.config
        hedge = max(cfg.lookup_hedge_min, cfg.lookup_hedge_factor * base)
        return min(query.soft_deadline, query.sent_at + hedge)

    def _worth_waiting(self) -> bool:
        """Keep waiting for slow contacts when nothing useful has come back yet.

        Under heavy load a live node can miss its soft timeout; a record lookup that found
        nothing (or a lookup nobody answered) then waits for those answers, up to the hard
        timeout, rather than report a miss.
        """
        if not self._queries:
            return False
        if self.records and self._positive == 0:
            return True
        return not any(s == "done" for s in self._state.values())

    def _revive_skipped(self) -> bool:
        """Nothing left to ask and nobody answered: ask the contacts skipped as suspects."""
        if any(s == "done" for s in self._state.values()):
            return False
        revived = False
        for node_id in sorted(self._skipped, key=self._dist)[: self.config.alpha]:
            self._skipped.discard(node_id)
            self._revived.add(node_id)
            self._state[node_id] = "new"
            revived = True
        return revived

    def _late_done(self, node: Node, future: asyncio.Future) -> None:
        self._late(future, node)

    def _late(self, future: asyncio.Future, node: Node) -> None:
        """An abandoned call finished after the lookup: still learn from it."""
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, RpcTimeout):
            self.protocol.contact_failed(node)
        elif exc is None:
            try:
                self.protocol.accept_reply(node, (node.ip, node.port), future.result())
            except RpcError:
                pass

    def _finish(self, query: _Query, future: asyncio.Future, loop: Any) -> None:
        node = query.node
        exc = future.exception()
        if exc is not None:
            self._state[node.id] = "failed"
            self.result.failed += 1
            if isinstance(exc, RpcTimeout):
                self.protocol.contact_failed(node)
            return
        try:
            _, body = self.protocol.accept_reply(node, (node.ip, node.port), future.result())
        except RpcError:
            self._state[node.id] = "failed"
            self.result.failed += 1
            return
        self._slowest = max(self._slowest, loop.time() - query.sent_at)
        known = self._nodes
        me = self.protocol.source_node.id
        for nid, host, port in parse_contacts(body.get("nodes"), self.config.k):
            if nid not in known and nid != me:
                peer = known[nid] = KadNode(nid, host, port)
                self._order.add(nid, peer.long_id)
                self._state[nid] = "new"
                if self.protocol.is_suspect(nid):
                    self._state[nid] = "slow"
                    self._skipped.add(nid)
        if self.records:
            self._take_records(query, body)
            nxt = body.get("next")
            # a page cut short because the node had not yet seen us answer (it sent its
            # cookie) is asked again at once with the cookie, from where it stopped
            cut = "cookie" in body and nxt == query.offset
            if (isinstance(nxt, int) and not isinstance(nxt, bool)
                    and (nxt > query.offset or cut)
                    and query.pages < self.config.max_find_pages):
                query.offset = nxt
                self._send(query, loop)
                return
        self._state[node.id] = "done"
        if self.records:
            self._seen[node.id] = query.seen

    def _take_records(self, query: _Query, body: dict) -> None:
        raw_list = body.get("records")
        if not isinstance(raw_list, list):
            return
        cfg = self.config
        key = self.target.id
        for raw in raw_list[:256]:
            try:
                record = decode_and_verify(raw, cfg)
            except InvalidRecord as exc:
                self.protocol.stats["records_refused"] += 1
                log.debug("lookup dropped a record from %s: %s", query.node, exc)
                continue
            if storage_key(record) != key:
                self.protocol.stats["records_refused"] += 1
                continue
            query.seen[(record.node_id, record.file_id)] = record.issued_at
            merge_record(self.result.records, record, raw)
        self._positive = sum(1 for rec, _ in self.result.records.values() if rec.kind != "w")
