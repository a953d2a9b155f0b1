"""A shared byte-rate cap (token bucket) for transfers: ``await pacer.take(n)``.

Every stream of a node (or every source of one download) takes from the same bucket,
so the cap holds for the total, whatever the number of streams. The bucket holds at
most ``burst`` seconds of bytes, so an idle pause does not turn into a burst later.
"""

from __future__ import annotations

import asyncio
import time


class Pacer:
    """Lets ``rate`` bytes per second through on average; ``rate <= 0`` means no cap."""

    def __init__(self, rate: int, burst: float = 0.25) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = rate * burst
        self._stamp = time.monotonic()
        #: Seconds callers were held back in total (how a test sees the cap applied).
        self.waited = 0.0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def take(self, size: int) -> None:
        """Wait until ``size`` bytes may pass (at once when there is no cap)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self.rate * self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= size
        if self._tokens < 0:
            delay = -self._tokens / self.rate
            self.waited += delay
            await asyncio.sleep(delay)
