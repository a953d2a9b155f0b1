"""``DhtNode``: the public facade (docs/ARCHITECTURE.md): listen, bootstrap, announce, find, leave.

It wires an ``Identity``, a ``RecordStore`` and a ``KadshareProtocol`` on one UDP
socket, runs the lookups of ``lookup.py``, and keeps three background loops: republish
(owners re-sign and re-store their records before the TTL runs out), refresh (lookups
of the own id and of stale buckets) and expiry (the store drops dead records).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from . import clock
from .config import DhtConfig
from .errors import DhtError, InvalidRecord
from .identity import Identity
from .keys import check_file_id, file_key, file_key_name, keyword_key, keyword_key_name
from .keywords import normalize_words
from .lookup import Lookup, LookupResult, merge_record
from .protocol import KadshareProtocol
from .records import (
    ProviderRecord,
    Record,
    encode_record,
    make_keyword,
    make_provider,
    make_withdrawal,
    storage_key,
)
from .results import LookupStats, SearchHit, count_lookups, search_hits
from .routing import Contact, KadNode
from .storage import RecordStore

log = logging.getLogger(__name__)


def _ip_literal(host: object, port: int) -> tuple[str, int] | None:
    """(host, port) if ``host`` is an IP address literal (no resolver, no thread)."""
    if not isinstance(host, str):
        return None
    try:
        return (str(ipaddress.ip_address(host)), port)
    except ValueError:
        return None


def next_wait(interval: float, jitter: float, *, first: bool = False,
              never_late: bool = False) -> float:
    """Seconds until a periodic job's next run, drawn from ``clock.rng()``.

    Centred on ``interval`` (spread ``interval * jitter``) so the mean period is the
    configured one; the first wait and ``never_late`` jobs (republish: a late run lets
    records expire) draw from ``interval * [1 - jitter, 1]`` instead.
    """
    if first or never_late:
        low, high = 1.0 - jitter, 1.0
    else:
        low, high = 1.0 - jitter / 2, 1.0 + jitter / 2
    return interval * clock.rng().uniform(low, high)


@dataclass(frozen=True)
class _Announcement:
    name: str
    size: int
    grpc: str
    words: tuple[str, ...]
    partial: bool = False


class DhtNode:
    """One node of the kadshare DHT; see docs/ARCHITECTURE.md for the contract."""

    def __init__(self, identity: Identity | None = None, config: DhtConfig | None = None
                 ) -> None:
        self.config = (config or DhtConfig()).validate()
        self.identity = identity or Identity.generate(clock.seeded_rng())
        self._node = KadNode(self.identity.node_id)
        self.store = RecordStore(self.config)
        self.protocol: KadshareProtocol | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self.receive_buffer = 0
        self._announced: dict[str, _Announcement] = {}
        self._loops: list[asyncio.Task] = []
        self._publish_gate: asyncio.Semaphore | None = None
        self._stopped = False
        self.schedule: dict[str, float] = {}
        """Loop time of each periodic job's next run (republish, refresh, expire)."""
        self.port = 0
        self.host = ""

    # -- identity and introspection ------------------------------------------------------
    @property
    def node_id(self) -> str:
        """This node's id, 40 lowercase hex characters."""
        return self.identity.node_id_hex

    def contacts(self, live_only: bool = False) -> list[Contact]:
        """The routing table's contacts; ``live_only`` leaves out those that missed
        their last request (a stopped peer stays in its bucket, as the paper wants,
        until a replacement arrives, but it is not shown as a live peer)."""
        if self.protocol is None:
            return []
        protocol = self.protocol
        return [
            Contact(n.id.hex(), n.ip, n.port) for n in protocol.router.all_contacts()
            if not (live_only and protocol.is_suspect(n.id))
        ]

    async def check_contacts(self, older_than: float, at_most: int) -> int:
        """Ping up to ``at_most`` contacts not heard from for ``older_than`` seconds,
        oldest first; one that does not answer is marked (``contacts(live_only=True)``
        hides it). Returns how many were pinged."""
        protocol = self.protocol
        if protocol is None:
            return 0
        cutoff = clock.now() - older_than
        quiet = [n for n in protocol.router.all_contacts() if protocol.last_heard(n.id) <= cutoff]
        quiet.sort(key=lambda n: protocol.last_heard(n.id))
        await asyncio.gather(*(protocol.call_ping(n) for n in quiet[:at_most]))
        return min(len(quiet), at_most)

    def stored_record_count(self) -> int:
        """Live provider and keyword records held in this node's store."""
        return self.store.record_count()

    def announced_file_ids(self) -> set[str]:
        """Files this node announces (and republishes)."""
        return set(self._announced)

    @property
    def stats(self) -> Counter[str]:
        """Transport and protocol counters (malformed datagrams, timeouts, ...)."""
        out: Counter[str] = Counter()
        if self.protocol is not None:
            out.update(self.protocol.stats)
        out.update({"store_" + k: v for k, v in self.store.stats.items()})
        return out

    def __repr__(self) -> str:
        return f"DhtNode({self.node_id[:8]} {self.host}:{self.port})"

    # -- lifecycle -----------------------------------------------------------------------
    async def listen(self, port: int = 0, interface: str = "127.0.0.1") -> None:
        """Bind the UDP socket and start the background loops."""
        if self.protocol is not None:
            raise DhtError("listen() was already called")
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self._transport, self.protocol = await loop.create_datagram_endpoint(
            lambda: KadshareProtocol(self._node, self.store, self.config, self.identity),
            local_addr=(interface, port), family=family,
        )
        sock = self._transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.socket_receive_buffer)
        except OSError as exc:  # a platform that refuses: keep its default, say so once
            log.info("could not enlarge the UDP receive buffer: %s", exc)
        #: SO_RCVBUF the kernel granted, bytes (it caps the request at net.core.rmem_max).
        self.receive_buffer = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        sockname = self._transport.get_extra_info("sockname")
        self.host, self.port = sockname[0], sockname[1]
        self._node.ip, self._node.port = self.host, self.port
        self._publish_gate = asyncio.Semaphore(self.config.publish_concurrency)
        self._loops = [asyncio.ensure_future(self._maintain())]
        log.info("dht node %s listening on %s:%d", self.node_id[:8], self.host, self.port)

    def _require_protocol(self) -> KadshareProtocol:
        if self.protocol is None or self._stopped:
            raise DhtError("the node is not listening (call listen() first, not after stop)")
        return self.protocol

    async def bootstrap(self, addrs: Iterable[tuple[str, int]]) -> int:
        """Contact known nodes, then look up our own id; return the contacts known."""
        protocol = self._require_protocol()
        loop = asyncio.get_running_loop()
        targets: list[tuple[str, int]] = []
        for host, port in addrs:
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                log.warning("ignoring bootstrap address %s:%s: bad port", host, port)
                continue
            sockaddr = _ip_literal(host, port)
            if sockaddr is None:  # a name: resolved in the loop's executor thread
                try:
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                except (OSError, UnicodeError) as exc:
                    log.warning("cannot resolve bootstrap address %s:%s: %s", host, port, exc)
                    continue
                if not infos:
                    continue
                sockaddr = (str(infos[0][4][0]), int(infos[0][4][1]))
            if sockaddr != (self.host, self.port):
                targets.append(sockaddr)
        if targets:
            answers = await asyncio.gather(*(protocol.ping_address(a) for a in targets))
            reached = sum(1 for a in answers if a is not None)
            if reached == 0:
                log.warning("no bootstrap node answered (%d tried)", len(targets))
            protocol.stats["lookups_bootstrap"] += 1
            await Lookup(protocol, self._node.id, self.config).run()
        n = len(protocol.router)
        log.info("dht node %s bootstrapped: %d contacts", self.node_id[:8], n)
        return n

    def prefill(self, contacts: Iterable[tuple[bytes, tuple[str, int]]]) -> int:
        """Enter ``(node id, address)`` pairs as contacts whose ids are already proven,
        without any message: a simulator's converged start (``--warmup direct``).  The
        ids are not checked here, so a real peer never calls this; returns the contacts
        known."""
        protocol = self._require_protocol()
        for node_id, (host, port) in contacts:
            protocol.admit_proven(KadNode(node_id, host, port))
        return len(protocol.router)

    def stop(self) -> None:
        """Close at once, as a crash would (no withdrawals)."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._loops:
            task.cancel()
        if self.protocol is not None:
            self.protocol.close()

    async def leave(self) -> None:
        """Withdraw every announced record network-wide, then stop."""
        if self.protocol is not None and not self._stopped:
            file_ids = list(self._announced)
            if file_ids:
                try:
                    await asyncio.wait_for(
                        asyncio.gather(*(self.withdraw(f) for f in file_ids)),
                        timeout=self.config.lookup_timeout * 2,
                    )
                except asyncio.TimeoutError:
                    log.warning("leave: withdrawals did not all finish in time")
            log.info("dht node %s left the network", self.node_id[:8])
        self.stop()

    # -- publishing ----------------------------------------------------------------------
    async def announce(self, file_id: str, name: str, size: int, grpc: str,
                       partial: bool = False) -> int:
        """Publish a provider record and a keyword record per word of ``name``
        (``partial``: a provider record marked partial and no keyword records, for a
        file this node is still downloading; announcing it again in full replaces it).

        Returns the number of remote stores that accepted the provider record (0 for a
        lone node: the record is then held and served locally).  The node republishes
        its records before their TTL until ``withdraw`` or ``leave``.
        """
        self._require_protocol()
        check_file_id(file_id)
        if not isinstance(name, str) or not name.strip():
            raise InvalidRecord("name must be a non-empty string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRecord("size must be an int >= 0")
        words = () if partial else tuple(normalize_words(name, self.config.max_keywords_per_name))
        ann = _Announcement(name=name, size=size, grpc=grpc, words=words, partial=partial)
        provider = make_provider(self.identity, file_id, name, size, grpc, self.config.record_ttl,
                                 partial=partial)
        self._announced[file_id] = ann
        return await self._publish_announcement(file_id, ann, provider)

    async def _publish_announcement(self, file_id: str, ann: _Announcement,
                                    provider: ProviderRecord | None = None) -> int:
        if self._announced.get(file_id) is not ann:
            return 0  # withdrawn (or re-announced) since: signing now would resurrect it
        ttl = self.config.record_ttl
        provider = provider or make_provider(
            self.identity, file_id, ann.name, ann.size, ann.grpc, ttl, partial=ann.partial
        )
        batches: list[tuple[bytes, Record]] = [(file_key(file_id), provider)]
        for word in ann.words:
            rec = make_keyword(self.identity, word, file_id, ann.name, ann.size, ttl,
                               issued_at=provider.issued_at)
            batches.append((keyword_key(word), rec))
        results = await asyncio.gather(*(self._publish(k, r) for k, r in batches))
        return results[0]

    async def _publish(self, key: bytes, record: Record) -> int:
        """Store ``record`` locally and at the k closest live nodes; return remote count."""
        encoded = encode_record(record)
        self.store.put(key, record, encoded, verified=True)
        protocol = self.protocol
        if protocol is None or self._stopped or len(protocol.router) == 0:
            return 0
        assert self._publish_gate is not None
        async with self._publish_gate:
            protocol.stats["lookups_publish"] += 1
            result = await Lookup(protocol, key, self.config).run()
            stores = [protocol.call_store_records(n, key, [encoded]) for n in result.closest]
            done = await asyncio.gather(*stores)
        ok = sum(1 for d in done if d > 0)
        if result.closest and ok == 0 and not self._stopped:
            self.store.stats["publish_unstored"] += 1
            level = logging.WARNING if self.store.stats["publish_unstored"] == 1 else logging.DEBUG
            log.log(level, "no remote node accepted a record under %s (counted in "
                    "stats['store_publish_unstored'])", key.hex()[:8])
        return ok

    async def withdraw(self, file_id: str) -> None:
        """Publish signed withdrawals of this node's records for ``file_id``."""
        self._require_protocol()
        check_file_id(file_id)
        ann = self._announced.pop(file_id, None)
        ttl = self.config.record_ttl
        names = [file_key_name(file_id)]
        if ann is not None:
            names += [keyword_key_name(w) for w in ann.words]
        jobs = []
        for key_name in names:
            rec = make_withdrawal(self.identity, key_name, file_id, ttl)
            jobs.append(self._publish(storage_key(rec), rec))
        await asyncio.gather(*jobs)
        log.info("withdrew %s", file_id[:12])

    # -- finding -------------------------------------------------------------------------
    async def _find(self, key: bytes, wanted: int | None = None) -> LookupResult:
        protocol = self._require_protocol()
        merged = LookupResult()
        for rec, raw in self.store.records(key):
            merge_record(merged.records, rec, raw)
        local_positive = sum(1 for r, _ in merged.records.values() if r.kind != "w")
        if len(protocol.router) == 0 or (wanted is not None and local_positive >= wanted):
            return merged
        protocol.stats["lookups_find"] += 1
        result = await Lookup(protocol, key, self.config, records=True, wanted=wanted).run()
        for rec, raw in result.records.values():
            merge_record(merged.records, rec, raw)
        merged.closest, merged.lacking = result.closest, result.lacking
        merged.queried, merged.failed = result.queried, result.failed
        if result.records and result.lacking:
            missing_for = result.lacking[0]
            raws = [raw for _, raw in result.records.values()]
            protocol.spawn(protocol.call_store_records(missing_for, key, raws))
        return merged

    async def find_providers(self, file_id: str, wanted: int | None = None, *,
                             stats: LookupStats | None = None) -> list[ProviderRecord]:
        """Live provider records of ``file_id`` from the network and the local store.

        ``wanted`` stops the lookup early once that many providers are known; ``stats``
        (if given) counts the peers asked and answering.
        """
        check_file_id(file_id)
        result = await self._find(file_key(file_id), wanted)
        count_lookups(stats, [result])
        found = [r for r in result.positive() if isinstance(r, ProviderRecord)]
        found.sort(key=lambda r: (-r.issued_at, r.node_id))
        return found

    async def search(self, query: str, *, stats: LookupStats | None = None
                     ) -> list[SearchHit]:
        """Files whose names contain every normalised word of ``query``.

        Every word's key is asked and the entries are pooled, then kept when the name
        they carry has all the query words.  A file is thus found through any one of its
        words: a key that is full (caps per publisher and per key) cannot hide it, as a
        plain intersection of per-word answers would. ``stats`` (if given) counts the
        peers asked and answering.
        """
        if not isinstance(query, str):
            raise TypeError("query must be a str")
        words = normalize_words(query, self.config.max_query_words)
        if not words:
            return []
        results = await asyncio.gather(*(self._find(keyword_key(w)) for w in words))
        count_lookups(stats, results)
        return search_hits(results, words)

    # -- background loops ----------------------------------------------------------------
    async def _maintain(self) -> None:
        """One task per node runs the three periodic jobs (cheaper than three tasks).

        Waits are drawn by ``next_wait`` (``periodic_jitter``) so that nodes started
        together drift apart instead of refreshing in step; a refresh that finds the
        node backing off (most recent RPCs timed out) is skipped and the next one
        waits twice as long, up to ``backoff_max_factor`` times.  A failing job is
        logged and retried next time.
        """
        cfg = self.config
        jobs = [
            (cfg.republish_interval, self.republish, True),
            (cfg.refresh_interval, self._refresh, False),
            (cfg.expire_interval, self._expire, False),
        ]
        loop = asyncio.get_running_loop()
        due = [loop.time() + next_wait(every, cfg.periodic_jitter, first=True)
               for every, _, _ in jobs]
        backoff = 1
        while not self._stopped:
            self.schedule = {job.__name__.strip("_"): at
                             for (_, job, _), at in zip(jobs, due, strict=True)}
            index = min(range(len(jobs)), key=due.__getitem__)
            await asyncio.sleep(max(0.0, due[index] - loop.time()))
            every, job, never_late = jobs[index]
            if job == self._refresh:
                protocol = self.protocol
                if protocol is not None and protocol.backing_off():
                    backoff = min(backoff * 2, cfg.backoff_max_factor)
                    protocol.stats["refresh_backed_off"] += 1
                    due[index] = loop.time() + next_wait(every * backoff, cfg.periodic_jitter)
                    continue
                backoff = 1
            due[index] = loop.time() + next_wait(every, cfg.periodic_jitter,
                                                 never_late=never_late)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dht background job %s failed", job.__name__)

    async def republish(self) -> None:
        """Re-sign and re-store every announced record now (the periodic job does it
        before the TTL runs out)."""
        items = list(self._announced.items())
        if items:
            log.debug("republishing %d files", len(items))
            await asyncio.gather(*(self._publish_announcement(f, a) for f, a in items))

    async def _refresh(self) -> None:
        """Refresh buckets no lookup touched for ``refresh_interval`` (paper §2.3).

        A bucket counts as fresh when any lookup touched it in that time, ours or one
        passing through us: neighbours' own refreshes keep ours fresh, so a
        neighbourhood runs about one own-id lookup per interval, not one per node.
        A stale bucket that has contacts gets one ``find_node`` to its least recently
        seen contact (``probe_bucket``) instead of a lookup: at 10,000 nodes lookups
        into such buckets were most of the network's traffic (issue 11).  Our own id
        and stale empty buckets still get lookups, at most
        ``refresh_lookups_per_wave``, one after the other.
        """
        protocol = self.protocol
        if protocol is None or len(protocol.router) == 0:
            return
        router = protocol.router
        own = router.buckets[router.get_bucket_for(self._node)]
        cutoff = clock.now() - self.config.refresh_interval
        targets = [self._node.id] if own.last_updated < cutoff else []
        stale = [b for b in router.lonely_buckets() if b is not own]
        for bucket in stale:
            if bucket.nodes:
                if self._stopped:
                    return
                await protocol.probe_bucket(bucket)
        empty = [b for b in stale if not b.nodes]
        room = self.config.refresh_lookups_per_wave - len(targets)
        if len(empty) > room:
            empty = clock.rng().sample(empty, max(0, room))
        targets += [protocol.refresh_id(b) for b in empty]
        for target in targets:
            if self._stopped:
                return
            protocol.stats["lookups_refresh"] += 1
            await Lookup(protocol, target, self.config).run()

    async def _expire(self) -> None:
        dropped = self.store.expire()
        if dropped:
            log.debug("expired %d records", dropped)
