"""Wide-area conditions made by the harness: per-pair latency and loss on datagrams.

The kernels this runs on lack ``netem``, so delay and loss are applied where every UDP
DHT in asyncio must pass: ``loop.create_datagram_endpoint``. While a ``NetModel`` is
installed on a loop, each new datagram transport gets a wrapped ``sendto`` that counts
the datagram, drops it with probability ``loss`` and delivers it after the pair's
one-way delay. Nothing in the node under test knows; it works the same for kadshare's
``DhtNode``, a plain ``kademlia.network.Server`` and the tracker baseline.

Traffic is attributed to a category through a context variable (``traffic_tag``):
the engine tags lookup and announce tasks, and everything else a node sends (answers,
refreshes, republishing, pings) counts as maintenance.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["NetModel", "traffic_tag", "Traffic"]

traffic_tag: contextvars.ContextVar[str] = contextvars.ContextVar("traffic_tag",
                                                                  default="maintenance")
# Per-lookup message counter: the engine sets a fresh list per lookup task.
op_counter: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "op_counter", default=None)


class Traffic:
    """Datagram and byte counters by category and by second since ``t0``."""

    def __init__(self) -> None:
        self.msgs: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)
        self.dropped = 0
        self.per_second: dict[int, int] = defaultdict(int)   # bytes sent per second
        self.t0: float | None = None

    def count(self, tag: str, nbytes: int, now: float) -> None:
        """Record one datagram sent."""
        self.msgs[tag] += 1
        self.bytes[tag] += nbytes
        if self.t0 is not None and now >= self.t0:
            self.per_second[int(now - self.t0)] += nbytes
        ctr = op_counter.get()
        if ctr is not None:
            ctr[0] += 1
            ctr[1] += nbytes

    def snapshot(self) -> dict[str, Any]:
        """Plain-dict copy for results and worker replies."""
        return {"msgs": dict(self.msgs), "bytes": dict(self.bytes), "dropped": self.dropped,
                "per_second": {str(k): v for k, v in self.per_second.items()}}


def _pair_unit(seed: int, a: str, b: str) -> float:
    lo, hi = sorted((a, b))
    h = hashlib.blake2b(f"{seed}|{lo}|{hi}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class NetModel:
    """Seeded per-pair one-way latency in [low, high] seconds and i.i.d. loss.

    The delay of a pair depends only on the seed and the two addresses, so it is the
    same in both directions and across runs; loss draws come from a seeded RNG.
    """

    def __init__(self, *, seed: int, latency: tuple[float, float] = (0.0, 0.0),
                 loss: float = 0.0) -> None:
        self.seed = seed
        self.low, self.high = latency
        self.loss = loss
        self.traffic = Traffic()
        self._rng = random.Random(f"netmodel/{seed}")
        self._delay_cache: dict[tuple[str, str], float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._orig: Callable[..., Any] | None = None
        self.on_endpoint: Callable[[Any, Any], None] | None = None

    @property
    def shaping(self) -> bool:
        """True when datagrams are delayed or dropped (else only counted)."""
        return self.high > 0 or self.loss > 0

    def delay(self, src: str, dst: str) -> float:
        """One-way delay of the pair (seconds)."""
        if self.high <= 0:
            return 0.0
        key = (src, dst) if src < dst else (dst, src)
        d = self._delay_cache.get(key)
        if d is None:
            d = self.low + (self.high - self.low) * _pair_unit(self.seed, *key)
            if len(self._delay_cache) < 2_000_000:
                self._delay_cache[key] = d
        return d

    def draw_loss(self) -> bool:
        """One seeded Bernoulli(loss) draw: True = drop this datagram."""
        return self._rng.random() < self.loss

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wrap every datagram endpoint created on ``loop`` from now on."""
        if self._loop is not None:
            raise RuntimeError("NetModel already installed")
        self._loop = loop
        orig = loop.create_datagram_endpoint
        self._orig = orig
        model = self

        async def create_datagram_endpoint(*args: Any, **kwargs: Any) -> Any:
            transport, protocol = await orig(*args, **kwargs)
            model.wrap(transport)
            if model.on_endpoint is not None:
                model.on_endpoint(transport, protocol)
            return transport, protocol

        loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[method-assign]  # the in-memory network replaces the loop's endpoint factory

    def uninstall(self) -> None:
        """Stop wrapping new endpoints (wrapped ones keep their model)."""
        if self._loop is not None:
            try:
                del self._loop.create_datagram_endpoint
            except AttributeError:
                pass
        self._loop = None

    def wrap(self, transport: Any) -> None:
        """Replace ``transport.sendto`` by a counting, delaying, dropping one."""
        sock = transport.get_extra_info("sockname")
        src = f"{sock[0]}:{sock[1]}" if sock else "?"
        orig_sendto = transport.sendto
        loop = asyncio.get_running_loop()
        traffic = self.traffic

        def deliver(data: bytes, addr: Any) -> None:
            if not transport.is_closing():
                try:
                    orig_sendto(data, addr)
                except OSError as exc:   # the kernel refused: same as a lost datagram
                    log.debug("late send to %s failed: %s", addr, exc)

        def sendto(data: bytes, addr: Any = None) -> None:
            if transport.is_closing():
                # A stopped node's pending handlers may still answer; the datagram would
                # never leave, and asyncio would log a traceback for it.
                return
            traffic.count(traffic_tag.get(), len(data), loop.time())
            if self.loss > 0 and self.draw_loss():
                traffic.dropped += 1
                return
            if self.high <= 0 or addr is None:
                orig_sendto(data, addr)
                return
            d = self.delay(src, f"{addr[0]}:{addr[1]}")
            loop.call_later(d, deliver, data, addr)

        transport.sendto = sendto
