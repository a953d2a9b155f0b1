"""Token buckets per sender address and per network prefix, and the anti-amplification
budget of answers to unproven addresses (``RequestGate``; issue 16).

Why: caps bound what a flood makes a node *hold*, not what it makes the node *do*; every
valid-looking store costs an Ed25519 verification and every lookup a reply.  A request
over its sender's budget (its own ``host:port``, then its /24 or /48 network, loopback
exempt unless configured) is dropped before its handler runs and counted, so one sender
or one subnet gets a bounded share of the node's CPU whatever it sends.

Tables are bounded LRU maps: a stranger spraying source addresses only ever evicts the
oldest buckets (a fresh bucket starts full, so eviction errs on the generous side; the
per-prefix bucket still holds a spoofing subnet back).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter, OrderedDict

from kadcommon.netkey import NetworkKey

from . import clock
from .clock import now
from .config import DhtConfig
from .kernelmute import KernelMute
from .routing import address_prefix, is_loopback
from .transport import MSG_ID_LEN, RESPONSE, Address, encode_datagram

FIND_OVERHEAD = 64  # envelope, map keys, "next" field
COOKIE_LEN = 8  # bytes of the address cookie (HMAC-SHA256 of host:port, truncated)
LOOKUP_METHODS = frozenset({"find_node", "find_records"})
#: bytes 13..19 of a store request: [version, kind, bin8 msg_id, [ "store", ...
STORE_OFFSET = 13
STORE_BYTES = b"\x92\xa5store"


class TokenBuckets:
    """``allow(key)`` spends one token of ``key``'s bucket (``rate``/s, ``burst`` deep)."""

    __slots__ = ("rate", "burst", "max_keys", "_buckets")

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()

    def allow(self, key: object, t: float | None = None) -> bool:
        """True (and one token spent) if ``key`` is within its rate; False otherwise."""
        t = now() if t is None else t
        entry = self._buckets.get(key)
        if entry is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
        else:
            tokens, last = entry
            tokens = min(self.burst, tokens + (t - last) * self.rate)
            self._buckets.move_to_end(key)
        if tokens < 1.0:
            self._buckets[key] = (tokens, t)
            return False
        self._buckets[key] = (tokens - 1.0, t)
        return True

    def empty(self, key: object, t: float) -> None:
        """Leave ``key`` with no tokens at ``t`` (it earns them back at ``rate``)."""
        self._buckets[key] = (0.0, t)
        self._buckets.move_to_end(key)

    def __len__(self) -> int:
        return len(self._buckets)


class RequestGate:
    """The protocol's rate limits and anti-amplification budget (a mixin of
    ``KadshareProtocol``): token buckets per address and per /24 (/48) for stores and
    lookups, and answers to an address that has not proved it receives our datagrams
    kept within ``amplification_factor`` times the request, with a cookie it can echo."""

    config: DhtConfig
    stats: Counter[str]
    request_size: int
    transport: asyncio.DatagramTransport | None
    netkey: NetworkKey | None

    def _init_gate(self, config: DhtConfig) -> None:
        #: address -> clock.now() until which its store datagrams are dropped undecoded
        self._muted: OrderedDict[Address, float] = OrderedDict()
        #: address -> (start of its current second, stores over budget in it)
        self._over: OrderedDict[Address, tuple[float, int]] = OrderedDict()
        #: the socket filter of kernel-muted flooders (made on first use; None = not yet)
        self._kernel: KernelMute | None = None
        self._kernel_timers: dict[Address, asyncio.TimerHandle] = {}
        # anti-amplification: addresses that proved they receive our datagrams, our
        # cookie secret, and the cookies other nodes gave us (echoed in our requests)
        self._proven: OrderedDict[Address, None] = OrderedDict()
        self._cookie_key = clock.random_bytes(32)
        self._cookies: OrderedDict[Address, bytes] = OrderedDict()
        burst, factor = config.rate_burst_seconds, config.prefix_rate_factor
        proven = config.proven_rate_factor
        self._limits = {
            kind: (TokenBuckets(rate, rate * burst),
                   TokenBuckets(rate * proven, rate * proven * burst),
                   TokenBuckets(rate * factor, rate * factor * burst))
            for kind, rate in (("store", config.store_rate), ("lookup", config.lookup_rate))
        }

    def admit(self, method: str, addr: Address) -> bool:
        """Token buckets per address and per /24 (/48) for stores and lookups; an address
        that answered one of our requests (a publisher handing over many keys) gets
        ``proven_rate_factor`` times the rate, a stranger that never answers only the base."""
        kind = "store" if method == "store" else "lookup" if method in LOOKUP_METHODS else None
        if kind is None:
            return True
        per_addr, per_proven, per_prefix = self._limits[kind]
        t = clock.now()
        buckets = per_proven if addr in self._proven else per_addr
        if not buckets.allow(addr, t):
            self.stats[f"rate_limited_{kind}"] += 1
            if kind == "store":  # its next stores are dropped before decoding
                self._muted[addr] = t + 1.0 / buckets.rate
                if len(self._muted) > self.config.contact_memory:
                    self._muted.popitem(last=False)
                self._note_over_budget(addr, t)
            return False
        if is_loopback(addr[0]) and not self.config.prefix_cap_on_loopback:
            return True
        if not per_prefix.allow(address_prefix(addr[0]) or addr[0], t):
            self.stats[f"rate_limited_{kind}_prefix"] += 1
            return False
        return True

    def drop_early(self, data: bytes, addr: Address) -> bool:
        """Drop a store datagram from an address over its store budget before it is
        decoded: under a flood of stores the per-datagram cost, not the signature
        checks (already skipped), is what delays honest requests.  Only the sender
        address and the method's bytes at their fixed offset are looked at; a store
        encoded otherwise is still caught by ``admit`` after decoding."""
        until = self._muted.get(addr)
        if until is None or data[STORE_OFFSET:STORE_OFFSET + len(STORE_BYTES)] != STORE_BYTES:
            return False
        t = clock.now()
        if t >= until:
            del self._muted[addr]
            return False
        self.stats["rate_limited_store"] += 1
        self.stats["rate_limited_early"] += 1
        self._note_over_budget(addr, t)
        return True

    # -- kernel mute (dht.kernelmute) -----------------------------------------------------
    def _note_over_budget(self, addr: Address, t: float) -> None:
        """Count ``addr``'s stores over budget per second; past ``kernel_mute_after`` in
        one second its stores are dropped by the kernel for ``kernel_mute_seconds``."""
        limit = self.config.kernel_mute_after
        if limit <= 0:
            return
        start, count = self._over.get(addr, (t, 0))
        if t - start >= 1.0:
            start, count = t, 0
        count += 1
        self._over[addr] = (start, count)
        self._over.move_to_end(addr)
        if len(self._over) > self.config.contact_memory:
            self._over.popitem(last=False)
        if count >= limit:
            del self._over[addr]
            self._kernel_mute(addr)

    def _kernel_mute(self, addr: Address) -> None:
        if self._kernel is None:
            sock = self.transport.get_extra_info("socket") if self.transport else None
            self._kernel = KernelMute(
                sock, max_senders=self.config.kernel_mute_max, method_offset=STORE_OFFSET,
                method_bytes=STORE_BYTES, enabled=sock is not None and self.netkey is None)
        if not self._kernel.mute(addr):
            return
        self.stats["kernel_mutes"] += 1
        self._kernel_timers[addr] = asyncio.get_running_loop().call_later(
            self.config.kernel_mute_seconds, self._kernel_release, addr)

    def _kernel_release(self, addr: Address) -> None:
        """End of a sentence: the filter lets ``addr``'s stores through again, and its
        store bucket starts empty (the sentence spent its burst)."""
        self._kernel_timers.pop(addr, None)
        if self._kernel is not None:
            self._kernel.unmute(addr)
        t = clock.now()
        for buckets in self._limits["store"][:2]:
            buckets.empty(addr, t)
        self._muted[addr] = t + 1.0 / self._limits["store"][0].rate

    def kernel_muted(self) -> list[Address]:
        """Addresses whose stores the kernel drops now (for status and tests)."""
        return list(self._kernel.senders) if self._kernel is not None else []

    def _close_gate(self) -> None:
        for handle in self._kernel_timers.values():
            handle.cancel()
        self._kernel_timers.clear()

    def _cookie_for(self, addr: Address) -> bytes:
        text = f"{addr[0]}|{addr[1]}".encode()
        return hmac.new(self._cookie_key, text, hashlib.sha256).digest()[:COOKIE_LEN]

    def _prove(self, addr: Address) -> None:
        self._proven[addr] = None
        self._proven.move_to_end(addr)
        if len(self._proven) > self.config.verified_ids_max:
            self._proven.popitem(last=False)

    def _reply_budget(self, addr: Address, cookie: object) -> int | None:
        """Bytes an answer to ``addr`` may take; None if the address is proven."""
        if addr in self._proven:
            return None
        if type(cookie) is bytes and hmac.compare_digest(cookie, self._cookie_for(addr)):
            self._prove(addr)
            return None
        self.stats["amplification_capped"] += 1
        return int(self.request_size * self.config.amplification_factor)

    def cookie_args(self, addr: Address, args: list) -> list:
        """``args`` plus the cookie ``addr`` gave us, if any (see _reply_budget)."""
        cookie = self._cookies.get(addr)
        return [*args, cookie] if cookie is not None else args

    def _take_cookie(self, addr: Address, body: dict) -> bool:
        cookie = body.get("cookie")
        if type(cookie) is not bytes or len(cookie) != COOKIE_LEN:
            return False
        self._cookies[addr] = cookie
        self._cookies.move_to_end(addr)
        if len(self._cookies) > self.config.contact_memory:
            self._cookies.popitem(last=False)
        return True


def trim_reply(reply: dict, limit: int, offset: int = 0) -> dict:
    """Drop trailing records (moving ``next`` back), then contacts, until the whole
    datagram fits ``limit`` bytes."""
    records, nodes = reply.get("records"), reply["nodes"]
    for _ in range(10_000):
        if len(encode_datagram(RESPONSE, bytes(MSG_ID_LEN), reply)) <= limit:
            break
        if records:
            records.pop()
            reply["next"] = offset + len(records)
        elif nodes:
            nodes.pop()
        else:
            break
    return reply


def fit_contacts(nodes: list[list], budget: int) -> list[list]:
    """The first contacts of ``nodes`` whose encoding fits ``budget`` bytes."""
    out: list[list] = []
    used = 0
    for entry in nodes:
        size = len(entry[0]) + len(entry[1]) + 8  # id, host, port, array headers
        if used + size > budget:
            break
        used += size
        out.append(entry)
    return out
