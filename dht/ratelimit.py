"""Token buckets per sender address and per network prefix (issue 16).

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

from collections import OrderedDict

from .clock import now


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

    def __len__(self) -> int:
        return len(self._buckets)
