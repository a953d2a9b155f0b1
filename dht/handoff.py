"""Handing records to newcomers (paper §2.5) and admitting contacts to the table.

A mixin of ``KadshareProtocol``: ``welcome_if_new`` adds a contact that proved its id
(``admission.py``), moves a known id to a new address only once the old one fails a
ping, and batches the check of which stored keys a newcomer is now responsible for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

from kademlia.node import Node

from .config import DhtConfig
from .routing import KadNode, RoutingTable
from .storage import RecordStore


class Handoff:
    """Admission to the routing table and the batched handoff of records."""

    config: DhtConfig
    stats: Counter[str]
    router: RoutingTable
    storage: RecordStore
    source_node: Node
    _closed: bool
    _moving: set[bytes]
    _newcomers: dict[bytes, Node]
    _handoff_timer: asyncio.TimerHandle | None

    if TYPE_CHECKING:
        def spawn(self, coro: Any) -> asyncio.Task | None: ...
        async def call_ping(self, node_to_ask: Node) -> dict | None: ...
        async def call_store_records(self, node: Node, key: bytes,
                                     encoded: list[bytes]) -> int: ...

    def welcome_if_new(self, node: Node) -> None:
        """Add a verified contact; hand it the records it is now responsible for (§2.5).

        The handoff check is batched: newcomers are collected for ``handoff_delay``
        seconds and then checked against every stored key at once, so the cost is one
        pass over the store per batch rather than per new contact.
        """
        if not self.router.is_new_node(node):
            moved_from = self.router.known_elsewhere(node)
            if moved_from is not None:
                self._check_move(moved_from, node)
                return
            self.router.add_contact(node)  # refresh its position (least recently seen)
            return
        self.router.add_contact(node)
        if not self.storage.keys() or self._closed:
            return
        self._newcomers[node.id] = node
        if self._handoff_timer is None:
            loop = asyncio.get_running_loop()
            self._handoff_timer = loop.call_later(self.config.handoff_delay,
                                                  self._handoff_batch)

    def _check_move(self, old: Node, new: Node) -> None:
        """A known id answered from a new address (a restarted peer on another port).

        The old address keeps the id while it answers, so a stranger cannot redirect a
        contact by claiming its id; once it fails a ping, the new address takes over.
        """
        if old.id in self._moving or self._closed:
            return
        self._moving.add(old.id)

        async def check() -> None:
            try:
                if await self.call_ping(old) is None:
                    self.router.remove_contact(old)
                    self.router.add_contact(new)
                    self.stats["contacts_moved"] += 1
            finally:
                self._moving.discard(old.id)

        self.spawn(check())

    def _handoff_batch(self) -> None:
        self._handoff_timer = None
        newcomers = [n for n in self._newcomers.values() if self.router.contains(n.id)]
        self._newcomers.clear()
        if not newcomers or self._closed:
            return
        new_ids = {n.id for n in newcomers}
        k = self.config.k
        router, my_long_id = self.router, self.source_node.long_id
        plans: dict[bytes, list[tuple[bytes, list[bytes]]]] = {}
        for key in self.storage.keys():
            keynode = KadNode(key)  # already a digest: no second hash (upstream hashed again)
            target = keynode.long_id
            limit = router.handoff_limit(keynode, my_long_id ^ target, k, new_ids)
            if limit == 0:
                continue  # someone we know is closer: leave the handoff to them
            for newcomer in newcomers:
                if limit is None or newcomer.long_id ^ target < limit:
                    encoded = [enc for _, enc in self.storage.records(key)]
                    if encoded:
                        plans.setdefault(newcomer.id, []).append((key, encoded))
        for newcomer in newcomers:
            items = plans.get(newcomer.id)
            if items:
                self.stats["handoffs"] += 1
                self.spawn(self._hand_off(newcomer, items))

    async def _hand_off(self, node: Node, items: list[tuple[bytes, list[bytes]]]) -> None:
        for key, encoded in items:
            if encoded:
                await self.call_store_records(node, key, encoded)
