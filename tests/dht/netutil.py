"""Helpers to start small in-process DHT networks on loopback (real UDP, port 0)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

from dht import DhtConfig, DhtNode


def file_id_of(text: str) -> str:
    """A valid file id (sha256 hex) derived from ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


async def start_network(count: int, config: DhtConfig | None = None) -> list[DhtNode]:
    """Start ``count`` nodes; each bootstraps from the first one."""
    config = config or DhtConfig.for_tests()
    nodes = [DhtNode(config=config) for _ in range(count)]
    for node in nodes:
        await node.listen(0, "127.0.0.1")
    seed = [("127.0.0.1", nodes[0].port)]
    for node in nodes[1:]:
        await node.bootstrap(seed)
    # a second pass lets early joiners learn about later ones
    await asyncio.gather(*(node.bootstrap(seed) for node in nodes[1:]))
    return nodes


def stop_all(nodes: list[DhtNode]) -> None:
    for node in nodes:
        node.stop()


async def eventually(check: Callable[[], Awaitable[bool]], attempts: int = 40,
                     pause: float = 0.25) -> bool:
    """Poll an async predicate with bounded retries (no fixed sleeps in tests)."""
    for _ in range(attempts):
        if await check():
            return True
        await asyncio.sleep(pause)
    return False
