"""Plain ``kademlia`` as a naive user would use it: the provider list is one value.

To share a file the user reads the list stored under the file id, appends itself and
writes the list back (``get`` then ``set``). The package keeps one value per key and
the last writer wins, so concurrent announcers overwrite each other; nothing ever
removes a departed provider. That is the behaviour kadshare is compared against.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from kademlia.network import Server
from kademlia.node import Node

from simulations.impls.base import Impl, ImplNode
from simulations.scenarios import FileSpec

log = logging.getLogger(__name__)

__all__ = ["KademliaImpl", "KademliaSimNode", "BOOTSTRAP_WAIT"]

BOOTSTRAP_WAIT = 20.0
T = TypeVar("T")


def _decode(value: Any) -> list[str]:
    """The stored provider list, or [] for anything that is not one."""
    if not isinstance(value, str):
        return []
    try:
        data = json.loads(value)
    except ValueError:
        return []
    return [x for x in data if isinstance(x, str)] if isinstance(data, list) else []


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned kademlia call ended with %r", task.exception())


async def _detached(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` in its own task that a caller's timeout abandons, never cancels.

    The package's calls are not cancellation-safe (rpcudp later sets a result on the
    cancelled future), and its own bugs (``set`` with no reachable neighbour raises
    ValueError from ``max([])``) would otherwise be logged as never-retrieved errors.
    """
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _node_id(params: dict[str, Any]) -> bytes | None:
    node_id = params.get("node_id")
    return bytes.fromhex(node_id) if node_id else None


class KademliaSimNode(ImplNode):
    """A ``kademlia.network.Server`` with package defaults (k=20, alpha=3, 5 s RPC wait)."""

    def __init__(self, idx: int, host: str, params: dict[str, Any]) -> None:
        super().__init__(idx, host, params)
        # The virtual runner gives a seeded id; otherwise the package draws one.
        self.server = Server(node_id=_node_id(params))
        self.node_id = self.server.node.id

    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        await self.server.listen(0, interface=self.host)
        sock = self.server.transport.get_extra_info("sockname")
        self.addr = (self.host, int(sock[1]))
        if bootstrap:
            # Under churn the package's bootstrap crawl waits 5 s for each dead contact
            # in every round; a user's program would keep running meanwhile, so after
            # BOOTSTRAP_WAIT the node counts as up and the crawl finishes in the background.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_detached(self.server.bootstrap(bootstrap)),
                                       BOOTSTRAP_WAIT)

    def prefill(self, contacts: list[tuple[bytes, tuple[str, int]]]) -> None:
        router = self.server.protocol.router
        for node_id, (host, port) in contacts:
            router.add_contact(Node(node_id, host, port))

    async def _announce(self, f: FileSpec) -> None:
        current = _decode(await self.server.get(f.file_id))
        if self.provider_key not in current:
            current.append(self.provider_key)
        await self.server.set(f.file_id, json.dumps(current))

    # rpcudp cannot be cancelled (its timeout then sets a result on a cancelled future and
    # asyncio logs a traceback), so harness timeouts abandon the call instead: shield().
    async def announce(self, f: FileSpec) -> None:
        await _detached(self._announce(f))

    async def lookup(self, f: FileSpec) -> list[str]:
        return _decode(await _detached(self.server.get(f.file_id)))

    async def leave(self) -> None:
        # The package has no delete: a leaving user just closes the program.
        self.server.stop()

    def crash(self) -> None:
        self.server.stop()

    def records(self) -> int:
        return len(self.server.storage.data)


class KademliaImpl(Impl):
    """Plain kademlia: no shared infrastructure."""

    name = "kademlia"

    def new_node(self, idx: int, host: str, params: dict[str, Any]) -> ImplNode:
        return KademliaSimNode(idx, host, params)

    def node_id_for(self, params: dict[str, Any]) -> bytes | None:
        return _node_id(params)
