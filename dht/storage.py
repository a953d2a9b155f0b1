"""The record store: set semantics per key, expiry per record, caps, eviction.

Unlike kademlia's ``IStorage`` (one last-writer-wins value per key), a key holds many
records, one per slot (owner node id, file id); the protocol handlers call
``put_encoded`` and ``records`` directly, so the upstream interface is not implemented.

Rules, in the order ``put`` applies them (documented in docs/PROTOCOL.md):

1. The record must verify (signature, id binding, sizes, TTL, clock) and belong under
   the key it is stored at.
2. Same slot: a strictly newer ``issued_at`` replaces the older record (a withdrawal is
   just a newer record); an older or equal one is refused as stale/duplicate.
3. New slot, caps checked in turn:
   a. keyword keys: at most ``max_keyword_entries_per_owner`` slots per owner: refused;
   b. ``max_records_per_owner`` over the whole store: refused;
   c. ``max_records_per_key``: keyword keys evict the soonest-expiring record of the
      owner holding the most slots under the key, if that owner holds more than the
      newcomer's owner; else refused.  Other keys (file keys: the Sybil target) rank
      records by *standing* (see ``_standing``): a record is **reachable** when its owner
      has answered one of our requests from the IP its record claims (the protocol's
      verified-address map; no extra packet is ever sent for it), and belongs to the
      **group** of that IP's /24 (IPv4) or /48 (IPv6) network; an unreachable record's
      group is the network of whoever handed it to us (the store's sender), since its
      claimed address is free to invent.  A reachable newcomer evicts an unreachable
      record; otherwise the newcomer evicts from the largest group only if that group
      holds at least two more slots than the newcomer's own.  The victim inside a group
      is unreachable before reachable, then the most recently *first* seen (a burst of
      new identities loses to long-lived providers; a refresh keeps its first-seen time).
      So identities from P networks hold at most about ``max_records_per_key``/(P+1) slots
      once other networks' providers arrive, and never block a reachable provider while
      any of their own records is unreachable;
   d. ``max_store_bytes``: evict the soonest-expiring record of the owner holding the
      most records in the store (never the newcomer's owner's own, which is refused).
   So a flood from one owner only ever displaces that owner's own records.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Callable

from .clock import wall
from .config import DhtConfig
from .errors import InvalidRecord
from .records import (
    KeywordRecord,
    ProviderRecord,
    Record,
    Slot,
    Withdrawal,
    decode_and_verify,
    encode_record,
    verify,
)
from .records import storage_key as record_key
from .routing import address_prefix

log = logging.getLogger(__name__)

Address = tuple[str, int]
LOCAL = "local"  # group of our own records (put without a sender)


@functools.lru_cache(maxsize=16384)
def network_of(host: str | None) -> str:
    """The /24 or /48 network of an IP (loopback included); the host itself otherwise."""
    if host is None:
        return "?"
    return address_prefix(host) or host


def claimed_host(record: Record) -> str | None:
    """The IP a provider record claims to serve from (None for other kinds)."""
    if not isinstance(record, ProviderRecord):
        return None
    host = record.grpc.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


# An entry's life in the live count (RecordStore._live): counted while held and not
# yet expired; then expired but still held (until the expiry job drops it); then gone.
_LIVE, _EXPIRED, _GONE = 0, 1, 2


class _Entry:
    __slots__ = ("record", "encoded", "stored_at", "first_seen", "sender_group",
                 "expires", "state")

    def __init__(self, record: Record, encoded: bytes, stored_at: float,
                 sender_group: str, first_seen: float | None = None) -> None:
        self.record = record
        self.encoded = encoded
        self.stored_at = stored_at
        self.first_seen = stored_at if first_seen is None else first_seen
        self.sender_group = sender_group
        self.expires = record.expires
        self.state = _LIVE


class RecordStore:
    """Verified records by key and slot; see the module docstring for the rules."""

    STORED, REPLACED, STALE, DUPLICATE, CAPPED = "stored", "replaced", "stale", "dup", "capped"

    def __init__(self, config: DhtConfig, clock: Callable[[], float] = wall,
                 reachable: Callable[[str], str | None] | None = None) -> None:
        self.config = config
        self.clock = clock
        #: owner node id (hex) -> the IP it answered our requests from, or None; set by
        #: the protocol (its verified-address map).  Decides which records are reachable.
        self.reachable: Callable[[str], str | None] = reachable or (lambda _nid: None)
        self._reach_epoch = 0
        # per full key: (epoch, standing per slot, slots per group), kept up to date by
        # _insert/_remove so a flood of refused newcomers costs O(1) each, not O(key)
        self._standings: dict[bytes, tuple[int, dict[Slot, tuple[bool, str]], Counter[str]]] = {}
        self._data: dict[bytes, dict[Slot, _Entry]] = {}
        self._owner_count: Counter[str] = Counter()
        self._bytes = 0
        self.stats: Counter[str] = Counter()
        # Live records counted as they come and go, so ``record_count`` (status pages,
        # the simulator's per-second samples) costs O(records expired since) instead of
        # a scan of the store: [provider/keyword, withdrawal].  Every entry is in
        # ``_expiry`` until its expiry passes; ``_expired`` holds the ones that expired
        # while still held, for the expiry job.
        self._live = [0, 0]
        self._expiry: list[tuple[float, int, bytes, Slot, _Entry]] = []
        self._expired: list[tuple[bytes, Slot, _Entry]] = []
        self._seq = itertools.count()

    # -- writes --------------------------------------------------------------------------
    def put(self, key: bytes, record: Record, encoded: bytes | None = None,
            verified: bool = False, sender: Address | None = None) -> str:
        """Store one record under ``key``; return a status string or raise InvalidRecord.

        ``sender`` is the address the record came from (None: our own record).
        """
        now = self.clock()
        if not verified:
            verify(record, self.config, now)
        if record_key(record) != key:
            raise InvalidRecord("record does not belong under this key")
        encoded = encoded if encoded is not None else encode_record(record)
        slots = self._data.get(key)
        slot = (record.node_id, record.file_id)
        old = slots.get(slot) if slots else None
        if old is not None:
            if old.expires <= now:
                self._remove(key, slot)
                old = None
            elif record.issued_at < old.record.issued_at:
                self.stats["stale"] += 1
                return self.STALE
            elif record.issued_at == old.record.issued_at:
                return self.DUPLICATE
        group = LOCAL if sender is None else network_of(sender[0])
        if old is not None:
            self._remove(key, slot)
            self._insert(key, slot, _Entry(record, encoded, now, group, old.first_seen))
            return self.REPLACED
        entry = _Entry(record, encoded, now, group)
        if not self._make_room(key, entry):
            self.stats["capped"] += 1
            return self.CAPPED
        self._insert(key, slot, entry)
        return self.STORED

    def put_encoded(self, key: bytes, encoded: bytes, sender: Address | None = None) -> str:
        """Decode, verify and store wire bytes (raises InvalidRecord)."""
        record = decode_and_verify(encoded, self.config, self.clock())
        return self.put(key, record, encoded, verified=True, sender=sender)

    def reachability_changed(self) -> None:
        """An owner was verified at a new address: standings must be recomputed."""
        self._reach_epoch += 1

    def _insert(self, key: bytes, slot: Slot, entry: _Entry) -> None:
        self._data.setdefault(key, {})[slot] = entry
        self._live[entry.record.kind == "w"] += 1
        heapq.heappush(self._expiry, (entry.expires, next(self._seq), key, slot, entry))
        cached = self._standings.get(key)
        if cached is not None:
            standing = cached[1][slot] = self._standing(entry)
            cached[2][standing[1]] += 1
        self._owner_count[slot[0]] += 1
        self._bytes += len(entry.encoded)

    def _remove(self, key: bytes, slot: Slot) -> None:
        slots = self._data[key]
        entry = slots.pop(slot)
        if not slots:
            del self._data[key]
        if entry.state == _LIVE:
            self._live[entry.record.kind == "w"] -= 1
        entry.state = _GONE
        cached = self._standings.get(key)
        if cached is not None:
            group = cached[1].pop(slot)[1]
            cached[2][group] -= 1
            if not slots:
                del self._standings[key]
        owner = slot[0]
        self._owner_count[owner] -= 1
        if self._owner_count[owner] <= 0:
            del self._owner_count[owner]
        self._bytes -= len(entry.encoded)

    def _standing(self, entry: _Entry) -> tuple[bool, str]:
        """(reachable, group) of a record; see the module docstring, rule 3c."""
        if entry.sender_group == LOCAL:
            return True, LOCAL
        ip = self.reachable(entry.record.node_id)
        if ip is not None:
            claimed = claimed_host(entry.record)
            if claimed is None or claimed == ip:
                return True, network_of(ip)
        return False, entry.sender_group

    def _evict_for(self, key: bytes, newcomer: _Entry) -> bool:
        """Rule 3c for non-keyword keys: free one slot for ``newcomer`` or say no."""
        slots = self._data[key]
        new_reach, new_group = self._standing(newcomer)
        cached = self._standings.get(key)
        if cached is None or cached[0] != self._reach_epoch:
            fresh = {s: self._standing(e) for s, e in slots.items()}
            cached = (self._reach_epoch, fresh, Counter(g for _, g in fresh.values()))
            self._standings[key] = cached
        _, standing, groups = cached
        candidates: list[Slot]
        top, top_count = groups.most_common(1)[0]
        if not new_reach and (top == LOCAL or top_count < groups[new_group] + 2):
            return False  # the flood's common case, decided without a scan
        unreachable = [s for s, (reach, _) in standing.items() if not reach]
        if new_reach and unreachable:
            crowd = Counter(standing[s][1] for s in unreachable).most_common(1)[0][0]
            candidates = [s for s in unreachable if standing[s][1] == crowd]
        else:
            if top == LOCAL or top_count < groups[new_group] + 2:
                return False
            candidates = [s for s in standing if standing[s][1] == top]
        victim = max(candidates, key=lambda s: (not standing[s][0], slots[s].first_seen))
        reason = "evicted_crowded" if standing[victim][0] else "evicted_unreachable"
        self._remove(key, victim)
        self.stats["evicted"] += 1
        self.stats[reason] += 1
        return True

    def _make_room(self, key: bytes, entry: _Entry) -> bool:
        cfg = self.config
        record = entry.record
        size = len(entry.encoded)
        owner = record.node_id
        slots = self._data.get(key, {})
        keyword = isinstance(record, KeywordRecord) or (
            isinstance(record, Withdrawal) and record.key_name.startswith("kw:")
        )
        if keyword:
            mine = sum(1 for s in slots if s[0] == owner)
            if mine >= cfg.max_keyword_entries_per_owner:
                return False
        if self._owner_count[owner] >= cfg.max_records_per_owner:
            return False
        if len(slots) >= cfg.max_records_per_key and not keyword:
            if not self._evict_for(key, entry):
                return False
        elif len(slots) >= cfg.max_records_per_key:
            per_owner = Counter(s[0] for s in slots)
            top, top_count = per_owner.most_common(1)[0]
            if top == owner or top_count <= per_owner[owner] + 1:
                return False
            victim = min((s for s in slots if s[0] == top), key=lambda s: slots[s].expires)
            self._remove(key, victim)
            self.stats["evicted"] += 1
        guard = 0
        while self._bytes + size > cfg.max_store_bytes and guard < 10_000:
            guard += 1
            top, _ = self._owner_count.most_common(1)[0]
            if top == owner:
                return False
            victim_key, victim_slot = min(
                ((k, s) for k, ss in self._data.items() for s in ss if s[0] == top),
                key=lambda ks: self._data[ks[0]][ks[1]].expires,
            )
            self._remove(victim_key, victim_slot)
            self.stats["evicted"] += 1
        return True

    def clear(self) -> None:
        """Forget every record (a restart without persistence)."""
        self._data.clear()
        self._standings.clear()
        self._owner_count.clear()
        self._bytes = 0
        self._live = [0, 0]
        self._expiry.clear()
        self._expired.clear()

    def _settle(self, now: float) -> None:
        """Take the entries whose expiry has passed out of the live count."""
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, _, key, slot, entry = heapq.heappop(heap)
            if entry.state == _LIVE:
                entry.state = _EXPIRED
                self._live[entry.record.kind == "w"] -= 1
                self._expired.append((key, slot, entry))

    def expire(self) -> int:
        """Drop every record whose TTL has run out; return how many."""
        self._settle(self.clock())
        dead, self._expired = self._expired, []
        dropped = 0
        for key, slot, entry in dead:
            if entry.state == _EXPIRED:
                self._remove(key, slot)
                dropped += 1
        return dropped

    # -- reads ---------------------------------------------------------------------------
    def records(self, key: bytes) -> list[tuple[Record, bytes]]:
        """Live records (withdrawals included) under ``key``, newest first."""
        now = self.clock()
        slots = self._data.get(key)
        if not slots:
            return []
        live = [(e.record, e.encoded) for e in slots.values() if e.expires > now]
        live.sort(key=lambda re: re[0].issued_at, reverse=True)
        return live

    def keys(self) -> list[bytes]:
        return list(self._data)

    def record_count(self, include_withdrawals: bool = False) -> int:
        """Records held; by default only live provider/keyword records."""
        self._settle(self.clock())
        return self._live[0] + (self._live[1] if include_withdrawals else 0)

    def owner_count(self, node_id: str) -> int:
        return self._owner_count.get(node_id, 0)

    @property
    def total_bytes(self) -> int:
        return self._bytes
