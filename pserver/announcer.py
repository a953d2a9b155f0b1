"""Keeps the DHT in step with the catalog: announce new files, withdraw gone ones.

The dht republishes announced records by itself until they are withdrawn, so this only
reacts to changes. A failed announce is retried at the next sync (logged once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from dht import DhtNode
from pserver.catalog import Catalog

log = logging.getLogger(__name__)

class Announcer:
    """Diff between what is shared and what was announced, applied to the DHT."""

    def __init__(self, dht: DhtNode, catalog: Catalog, grpc_address: str, *,
                 timeout: float, parallel: int) -> None:
        """``timeout``: seconds one announcement or withdrawal may take; ``parallel``:
        how many run at once (``NodeConfig.announce_timeout`` / ``announce_parallel``)."""
        self.dht = dht
        self.timeout = timeout
        self.parallel = parallel
        self.catalog = catalog
        self.grpc_address = grpc_address
        self.announced: dict[str, tuple[str, int]] = {}
        self._lock = asyncio.Lock()
        self._failing: set[str] = set()

    async def sync(self) -> None:
        """Withdraw what is no longer shared (or renamed), announce what is new.

        The DHT gets the base name (its records refuse path separators); the relative
        path stays visible in ``/files`` and ``GetInfo``.
        """
        async with self._lock:
            wanted = {
                f.file_id: (f.name.rsplit("/", 1)[-1], f.size) for f in self.catalog.files()
            }
            gone = [f for f, announced in self.announced.items() if wanted.get(f) != announced]
            await self._bounded(self._withdraw(f) for f in gone)
            new = [(f, n, s) for f, (n, s) in wanted.items() if f not in self.announced]
            await self._bounded(self._announce(f, n, s) for f, n, s in new)

    async def _bounded(self, jobs: Iterable[Coroutine[Any, Any, None]]) -> None:
        """Run DHT operations ``parallel`` at a time (a folder of thousands of files
        would otherwise be announced one lookup after another)."""
        gate = asyncio.Semaphore(self.parallel)

        async def gated(job: Coroutine[Any, Any, None]) -> None:
            async with gate:
                await job

        await asyncio.gather(*(gated(job) for job in jobs))

    async def withdraw_all(self) -> None:
        async with self._lock:
            await self._bounded(self._withdraw(f) for f in list(self.announced))

    async def _announce(self, file_id: str, name: str, size: int) -> None:
        try:
            await asyncio.wait_for(
                self.dht.announce(file_id, name, size, grpc=self.grpc_address), self.timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the network may be unreachable: retry next sync
            if file_id not in self._failing:
                self._failing.add(file_id)
                reason = exc or type(exc).__name__
                log.warning("announcing %s failed (%s); will retry", name, reason)
            return
        self._failing.discard(file_id)
        self.announced[file_id] = (name, size)
        log.info("sharing %s (%d bytes, %s)", name, size, file_id[:12])

    async def _withdraw(self, file_id: str) -> None:
        name, _ = self.announced.pop(file_id)
        try:
            await asyncio.wait_for(self.dht.withdraw(file_id), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the records expire on their own anyway
            log.warning("withdrawing %s failed (%s)", name, exc or type(exc).__name__)
            return
        log.info("stopped sharing %s (%s)", name, file_id[:12])
