"""DHT tunables: one frozen value object, passed down, never read from globals.

Each field documents its default, its unit and, where there is one, its symbol in the
Kademlia paper (Maymounkov & Mazieres, 2002).  Production defaults are chosen for a
file-sharing index (see docs/PROTOCOL.md, "Intervals"):  records live 60 min and owners
republish every 20 min, between BitTorrent's 30 min announce interval and IPFS's
22 h republish / 48 h expiry, and closer to OpenDHT's 10 min value refresh, because a
provider that vanished should drop out of search results within about an hour.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

#: The wire version of this code (first element of every datagram, docs/PROTOCOL.md).
PROTOCOL_VERSION = 2
#: The k every version-1 peer uses; another k is another network (see ``validate``).
DEFAULT_K = 20


@dataclass(frozen=True, kw_only=True)
class DhtConfig:
    """All DHT settings with production defaults; see ``for_tests()`` for short ones."""

    protocol_version: int = PROTOCOL_VERSION
    """Version sent in, and required of, every datagram.  Peers of different versions
    never talk, which is what keeps a network with another ``k`` apart."""
    k: int = DEFAULT_K
    """Bucket size and replication factor (paper: k). Default 20.  Peers assume each
    other's k when they pick replicas and stop lookups, so ``validate`` refuses another
    k unless ``protocol_version`` differs too (as go-libp2p-kad-dht ties k to its
    protocol id)."""
    alpha: int = 3
    """Requests kept in flight by one lookup (paper: alpha). Default 3."""
    rpc_timeout_min: float = 0.03
    """Lower bound of the adaptive (soft) per-call timeout, seconds. Default 30 ms: past
    it a lookup only stops counting the call and asks the next contact (a late answer is
    still used), so a low floor hedges early; 0.1 s left every lookup after a crash wave
    waiting 100 ms per dead contact (issue 16, dht_bench --hog)."""
    rpc_timeout_max: float = 2.0
    """Upper bound of the adaptive timeout and the hard timeout of a call, seconds."""
    rpc_timeout_initial: float = 0.5
    """Timeout used before any round-trip time to a peer has been measured, seconds."""
    dead_contact_memory: float = 60.0
    """How long a contact that missed the hard timeout is skipped by lookups, seconds."""
    stale_after_misses: int = 3
    """Consecutive missed hard timeouts before a contact leaves the routing table, and
    then only if its bucket has a replacement ready (paper section 4.1).  Dropping on the
    first miss emptied whole tables when a CPU-starved process missed a burst of replies
    (1,000 nodes in one process, tests/dht/test_network.py::TestStarvedTable)."""
    dead_evict_floor: int = 2
    """A contact that missed ``stale_after_misses`` hard timeouts in a row leaves its
    bucket even with no replacement waiting, provided the bucket keeps at least this many
    other contacts that are not suspect; it re-enters when it is heard from again.  Below
    the floor a dead contact keeps its slot (a starved process must not empty its table)."""
    lookup_hedge_factor: float = 3.0
    """A lookup stops waiting for a call once it has been out this many times the slowest
    answer the same lookup has had so far (and ``lookup_hedge_min``), before its soft
    timeout: it asks the next contact and still uses a late answer.  A contact never
    queried since a crash wave otherwise costs a full soft timeout in every lookup that
    meets it (issue 16, dht_bench after settle).  Not a suspicion: only this lookup."""
    lookup_hedge_min: float = 0.005
    """Floor of the hedge above, seconds."""
    lookup_fresh_first: bool = True
    """The first round of a lookup asks the alpha - 1 closest contacts and the one of the
    k closest heard from most recently, when the alpha closest were all heard from less
    recently: after a crash wave the alpha closest of a node that has not looked anything
    up since can all be dead, and the first round then waited a full soft timeout (issue
    16, dht_bench 10 s after the kill).  Nobody is given up on earlier."""
    lookup_probe_first_round: bool = True
    """Before a lookup's first answer, a call out longer than ``lookup_hedge_factor``
    times the node's smoothed round trip (at least ``lookup_hedge_min``) frees its slot
    for one more contact, up to 2 * alpha calls out; the call itself is still awaited
    until its soft timeout (nobody is given up on earlier).  A first round whose contacts
    all died waited a full soft timeout (>= 30 ms) before asking anyone else (issue 16)."""
    lookup_probe_min_rtt: bool = False
    """The first-round hedge above counts from the node's smallest recent round trip
    (``rtt_min_window``) instead of its smoothed one.  With 20 lookups in flight on a
    busy loop the smoothed round trip grows to ~10 ms, 3x it reached the 30 ms soft-timeout
    floor and the hedge never fired before it (issue 16, dht_bench --hog, 10 s after the
    kill); queueing inflates the average, not the minimum.  Off by default: in the
    open-loop benchmark it removed the dead-contact waits at no extra traffic, but on a
    saturated loop (closed loop, 20 in flight) its 5 ms floor also hedged live calls:
    requests per lookup +35 %, p99 worse in one run (docs/PROTOCOL.md, session 7)."""
    lookup_timeout: float = 10.0
    """Wall-clock cap on one iterative lookup, seconds."""
    record_ttl: int = 3600
    """Lifetime of a record after it is issued, seconds. Default 60 min."""
    max_record_ttl: int = 24 * 3600
    """Largest TTL a storing node accepts, seconds. Default 24 h."""
    republish_interval: float = 1200.0
    """How often an owner re-signs and re-stores its records, seconds. Default 20 min."""
    refresh_interval: float = 900.0
    """Bucket refresh period (paper: tRefresh = 1 h; shorter here for churn), seconds."""
    expire_interval: float = 60.0
    """How often the store drops expired records, seconds."""
    max_clock_skew: float = 120.0
    """How far in the future issued_at may lie, seconds."""
    max_datagram: int = 8192
    """Largest datagram sent or accepted, bytes. Responses are truncated/paged to fit."""
    max_record_bytes: int = 1024
    """Largest encoded record, bytes."""
    max_name_bytes: int = 255
    """Largest file name (UTF-8), bytes."""
    max_records_per_key: int = 512
    """Records held under one key by a storing node."""
    max_records_per_owner: int = 2048
    """Records of one owner (node id) held by a storing node over all keys."""
    max_keyword_entries_per_owner: int = 64
    """Entries one publisher may hold under one keyword key (anti-spam)."""
    max_store_bytes: int = 32 * 1024 * 1024
    """Total encoded bytes a storing node keeps; beyond it, eviction (PROTOCOL.md)."""
    max_find_pages: int = 8
    """Pages a lookup fetches from one node when a key has more records than fit."""
    max_contacts_per_prefix: int = 2
    """Contacts per bucket sharing one /24 (IPv4) or /48 (IPv6) prefix; loopback exempt."""
    prefix_cap_on_loopback: bool = False
    """Apply ``max_contacts_per_prefix`` to 127.0.0.0/8 and ::1 too (tests of the cap)."""
    max_keywords_per_name: int = 12
    """Words of one name that get a keyword record."""
    pending_calls_max: int = 4096
    """Outstanding requests before new calls fail fast (protects memory)."""
    welcome_pings_per_second: float = 50.0
    """Rate of pings sent to unknown senders to verify them before they enter the table."""
    store_rate: float = 100.0
    """Store requests per second served per sender address (host:port); a sender's
    /24 or /48 network gets ``prefix_rate_factor`` times as much (loopback exempt unless
    ``prefix_cap_on_loopback``).  Beyond it requests are dropped unanswered and counted
    (``rate_limited_store``).  Bursts up to ``rate_burst_seconds`` of rate pass."""
    lookup_rate: float = 500.0
    """find_node/find_records requests per second per sender address (as ``store_rate``)."""
    prefix_rate_factor: float = 5.0
    """A network prefix's rate as a multiple of one address's rate."""
    rate_burst_seconds: float = 2.0
    """Depth of every token bucket, in seconds of its rate."""
    kernel_mute_after: int = 1000
    """Stores over budget within one second from one address (10x ``store_rate`` by
    default) after which the kernel drops that address's stores for
    ``kernel_mute_seconds`` (a socket filter, ``dht.kernelmute``; Linux, IPv4, no
    network key).  0 turns kernel muting off."""
    kernel_mute_seconds: float = 5.0
    """How long a kernel mute lasts; afterwards the sender's store bucket starts empty."""
    kernel_mute_max: int = 32
    """Addresses kernel-muted at once at most (the filter's length grows with them)."""
    amplification_factor: float = 3.0
    """An answer to an address that has not proved it receives our datagrams (answered
    one of our requests, or echoed our cookie) is at most this many times the request's
    size (QUIC's anti-amplification rule, RFC 9000 section 8)."""
    socket_receive_buffer: int = 1024 * 1024
    """SO_RCVBUF asked for the UDP socket, bytes (the kernel caps it at rmem_max).  Linux's
    default of 208 KiB overflows when a burst of 8 KiB store replies lands while the loop
    is busy; every datagram lost there becomes a timeout."""

    periodic_jitter: float = 0.5
    """Share of its interval over which each periodic job (refresh, republish, expiry)
    spreads its runs: a wait is drawn from ``interval * [1 - j/2, 1 + j/2]`` (republish:
    ``[1 - j, 1]``, never later than configured, so records cannot lapse), the first one
    from ``interval * [1 - j, 1]``.  With the old 10 % the refresh waves of 300 nodes
    that joined together stayed in step and held one process's loop past the RPC
    timeout (issue 11, benchmarks/dht_storm.py).  0 <= j < 1; default 0.5."""
    refresh_lookups_per_wave: int = 3
    """Lookups one refresh runs, one after the other: the own id, then random stale
    buckets that have no contacts (upstream: every stale bucket at once).  A stale bucket
    with contacts gets one ``find_node`` to its oldest contact instead (``probe_bucket``)."""
    full_bucket_ping_interval: float = 5.0
    """Least time between two pings of a full bucket's least-recently-seen contact,
    seconds.  Upstream pinged it for every newcomer that found the bucket full."""
    backoff_timeout_share: float = 0.5
    """When more than this share of a node's recent RPCs (about the last
    ``backoff_window`` seconds) timed out, the node backs off: it skips bucket refresh
    (doubling the wait, up to ``backoff_max_factor`` x ``refresh_interval``), newcomer
    probes and full-bucket pings, instead of adding traffic to an overloaded network."""
    backoff_window: float = 10.0
    """Half-life of the decaying RPC outcome counts behind ``backoff_timeout_share``, s."""
    backoff_min_calls: int = 20
    """Recent RPC outcomes needed before the timeout share can trigger the backoff."""
    backoff_max_factor: int = 8
    """Largest multiple of ``refresh_interval`` a backed-off refresh waits."""

    lookup_query_factor: int = 8
    """One lookup queries at most ``k * lookup_query_factor`` nodes, however many new
    contacts answers keep bringing (bounds a lookup fed by liars)."""
    max_records_per_store: int = 64
    """Records in one ``store`` request: a sender splits larger batches, a receiver
    ignores the excess."""
    handoff_delay: float = 0.5
    """Seconds newcomers are collected before one pass hands them the records they are
    now among the k closest for (one pass per burst of joins, not one per newcomer)."""
    probe_memory: int = 16
    """Unknown senders remembered as recently probed (welcome ping), so a burst from
    one address costs one probe."""
    verified_ids_max: int = 65536
    """Node ids remembered with the address they answered from (and addresses that
    proved they receive our datagrams); the oldest are forgotten beyond it."""
    proven_rate_factor: float = 10.0
    """Request rate of an address that answered one of our requests, as a multiple of
    a stranger's (``store_rate``, ``lookup_rate``)."""
    contact_memory: int = 4096
    """Contacts remembered per kind of bookkeeping (cookies they gave us, when each last
    answered, their missed timeouts); the oldest are forgotten beyond it."""
    suspect_memory: int = 256
    """Contacts remembered as suspect (missed a hard timeout: lookups skip them)."""
    rtt_addresses: int = 16
    """Addresses with their own round-trip estimate; others use the overall one."""
    rtt_min_window: float = 10.0
    """Window of the smallest recent round trip (``lookup_probe_min_rtt``), seconds: the
    minimum is taken over the last one to two windows."""
    max_query_words: int = 8
    """Words of a search query that are looked up; the rest are ignored."""
    publish_concurrency: int = 8
    """Records one node stores on the network at the same time (announce, republish)."""
    network_key: bytes = b""
    """Closed network (``kadcommon.netkey``): 32 bytes, or empty for the public network.
    Every datagram then carries a MAC keyed by it; datagrams without one are dropped."""

    def validate(self) -> DhtConfig:
        """Raise ValueError naming the first bad field; return self so calls chain."""
        positive_ints = (
            "k", "alpha", "record_ttl", "max_record_ttl", "max_datagram", "max_record_bytes",
            "max_name_bytes", "max_records_per_key", "max_records_per_owner",
            "max_keyword_entries_per_owner", "max_store_bytes", "max_find_pages",
            "max_contacts_per_prefix", "max_keywords_per_name", "pending_calls_max",
            "socket_receive_buffer", "stale_after_misses", "refresh_lookups_per_wave",
            "backoff_min_calls", "backoff_max_factor", "protocol_version",
            "lookup_query_factor", "max_records_per_store", "probe_memory",
            "verified_ids_max", "max_query_words", "publish_concurrency",
            "contact_memory", "suspect_memory", "dead_evict_floor", "rtt_addresses",
            "kernel_mute_max",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DhtConfig.{name} must be a positive int, got {value!r}")
        positive_floats = (
            "rpc_timeout_min", "rpc_timeout_max", "rpc_timeout_initial", "lookup_timeout",
            "dead_contact_memory", "lookup_hedge_factor", "lookup_hedge_min",
            "republish_interval", "refresh_interval", "expire_interval",
            "welcome_pings_per_second", "store_rate", "lookup_rate", "prefix_rate_factor",
            "rate_burst_seconds", "full_bucket_ping_interval", "backoff_window",
            "handoff_delay", "proven_rate_factor", "kernel_mute_seconds", "rtt_min_window",
        )
        for name in positive_floats:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"DhtConfig.{name} must be > 0, got {value!r}")
        if not isinstance(self.amplification_factor, (int, float)) \
                or isinstance(self.amplification_factor, bool) or self.amplification_factor < 1:
            raise ValueError("DhtConfig.amplification_factor must be >= 1")
        if not isinstance(self.network_key, bytes) or len(self.network_key) not in (0, 32):
            raise ValueError("DhtConfig.network_key must be 32 bytes or empty")
        if not isinstance(self.kernel_mute_after, int) or isinstance(self.kernel_mute_after, bool) \
                or self.kernel_mute_after < 0:
            raise ValueError("DhtConfig.kernel_mute_after must be an int >= 0")
        if self.kernel_mute_max > 60:
            raise ValueError("DhtConfig.kernel_mute_max must be at most 60")
        if not 0 <= self.periodic_jitter < 1:
            raise ValueError("DhtConfig.periodic_jitter must be within [0, 1)")
        if not 0 < self.backoff_timeout_share <= 1:
            raise ValueError("DhtConfig.backoff_timeout_share must be within (0, 1]")
        if self.max_clock_skew < 0:
            raise ValueError("DhtConfig.max_clock_skew must be >= 0")
        if self.rpc_timeout_min > self.rpc_timeout_max:
            raise ValueError("DhtConfig.rpc_timeout_min must not exceed rpc_timeout_max")
        if self.record_ttl > self.max_record_ttl:
            raise ValueError("DhtConfig.record_ttl must not exceed max_record_ttl")
        if self.republish_interval >= self.record_ttl:
            raise ValueError("DhtConfig.republish_interval must be shorter than record_ttl")
        if self.max_datagram < 1024 or self.max_datagram > 65000:
            raise ValueError("DhtConfig.max_datagram must be within 1024..65000 bytes")
        if self.max_record_bytes * 2 > self.max_datagram:
            raise ValueError("DhtConfig.max_record_bytes must fit twice in max_datagram")
        if self.k != DEFAULT_K and self.protocol_version == PROTOCOL_VERSION:
            raise ValueError(
                f"DhtConfig.k={self.k} differs from the network's k={DEFAULT_K}: set "
                f"protocol_version to another value than {PROTOCOL_VERSION} too, so these "
                "peers form their own network instead of mixing with k=20 peers")
        return self

    def with_changes(self, **changes: Any) -> DhtConfig:
        """Return a validated copy with some fields replaced."""
        return replace(self, **changes).validate()

    @classmethod
    def for_tests(cls, **changes: Any) -> DhtConfig:
        """Short intervals for tests and simulations: TTL 30 s, republish 10 s."""
        base: dict[str, Any] = dict(
            record_ttl=30,
            republish_interval=10.0,
            refresh_interval=20.0,
            expire_interval=2.0,
            rpc_timeout_max=1.5,
            lookup_timeout=8.0,
        )
        base.update(changes)
        return cls(**base).validate()

    def __repr__(self) -> str:
        defaults = DhtConfig.__dataclass_fields__
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != defaults[f.name].default
        ]
        return f"DhtConfig({', '.join(changed)})"
