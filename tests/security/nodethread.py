"""Real DHT nodes on a background event loop, so synchronous hypothesis tests can hit them.

Why: hypothesis drives a plain function per example; the nodes under attack must keep
running (and answering) between examples, on real UDP sockets, for the whole test.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from dht.config import DhtConfig
from dht.node import DhtNode


class LoopThread:
    """One asyncio loop on a daemon thread; ``run`` executes a coroutine there.

    ``enter`` runs first on the thread (e.g. to move it into a network namespace, so
    every socket the loop opens lives there).
    """

    def __init__(self, enter: Callable[[], None] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None

        def main() -> None:
            try:
                if enter is not None:
                    enter()
            except BaseException as exc:  # reported to the creating thread
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        self._ready.wait(timeout=20)
        if self._error is not None:
            raise self._error

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def _cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.run(_cancel_rest(), timeout=20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=20)
            self.loop.close()


class SmallNet:
    """``n`` DhtNodes on 127.0.0.1 in one background loop, joined through the first."""

    def __init__(self, n: int = 4, config: DhtConfig | None = None) -> None:
        self.lt = LoopThread()
        self.config = config or DhtConfig.for_tests()
        self.nodes: list[DhtNode] = self.lt.run(self._start(n))

    async def _start(self, n: int) -> list[DhtNode]:
        nodes = []
        for i in range(n):
            node = DhtNode(config=self.config)
            await node.listen(port=0, interface="127.0.0.1")
            if i:
                await node.bootstrap([("127.0.0.1", nodes[0].port)])
            nodes.append(node)
        return nodes

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return self.lt.run(coro, timeout)

    def announce(self, node: DhtNode, name: str, size: int) -> str:
        """Announce a file called ``name`` from ``node``; return its (made-up) file id."""
        file_id = hashlib.sha256(name.encode()).hexdigest()
        self.run(node.announce(file_id, name, size, grpc="127.0.0.1:9"))
        return file_id

    def close(self) -> None:
        async def _stop() -> None:
            for node in self.nodes:
                node.stop()

        try:
            self.lt.run(_stop(), timeout=20)
        finally:
            self.lt.close()
