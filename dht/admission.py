"""Node ids bound to keys on the wire (issue 16).

A node id is the SHA-1 of an Ed25519 public key (``identity.py``), but a reply only
*claims* an id.  Before a contact enters a routing table it answers a ``ping`` that
carries a fresh nonce with its public key and a signature over (tag, nonce, asker id,
its own id): a node cannot take an id whose key it lacks, so it cannot place itself at a
chosen distance from a target for free.  Proven (id, address) pairs are cached, so the
cost is one signature and one check per contact, not per message; a contact whose
proof failed is not asked again for ``retry_after`` seconds.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

from kademlia.node import Node

from . import clock
from .config import DhtConfig
from .identity import Identity, node_id_for, verify_signature
from .routing import KadNode, RoutingTable
from .transport import Address, BadRequest

ID_LEN = 20
NONCE_LEN = 16
PROOF_TAG = b"kadshare-id-proof/2"

ProvenKey = tuple[bytes, Address]


def proof_message(nonce: bytes, asker_id: bytes, prover_id: bytes) -> bytes:
    """The bytes a prover signs; the asker id keeps an answer from serving another asker."""
    return PROOF_TAG + nonce + asker_id + prover_id


def check_nonce(nonce: object) -> bytes:
    """The nonce of a ping request, or BadRequest."""
    if type(nonce) is not bytes or len(nonce) != NONCE_LEN:
        raise BadRequest(f"nonce must be {NONCE_LEN} bytes")
    return nonce


def make_proof(identity: Identity, nonce: bytes, asker_id: bytes) -> dict[str, bytes]:
    """The fields a ping reply adds to prove ``identity`` owns its id."""
    msg = proof_message(nonce, asker_id, identity.node_id)
    return {"key": identity.public_key, "sig": identity.sign(msg)}


def check_proof(body: dict[str, Any], nonce: bytes, asker_id: bytes, prover_id: bytes) -> bool:
    """Whether a ping reply proves that its sender holds the key of ``prover_id``."""
    key, sig = body.get("key"), body.get("sig")
    if type(key) is not bytes or type(sig) is not bytes or node_id_for(key) != prover_id:
        return False
    return verify_signature(key, sig, proof_message(nonce, asker_id, prover_id))


class ProvenIds:
    """(node id, address) pairs that proved their key (bounded LRU), and recent failures."""

    def __init__(self, size: int, retry_after: float) -> None:
        self._size = size
        self._retry_after = retry_after
        self._proven: OrderedDict[ProvenKey, None] = OrderedDict()
        self._failed: OrderedDict[ProvenKey, float] = OrderedDict()

    def __contains__(self, key: ProvenKey) -> bool:
        if key in self._proven:
            self._proven.move_to_end(key)
            return True
        return False

    def __len__(self) -> int:
        return len(self._proven)

    def add(self, key: ProvenKey) -> None:
        self._failed.pop(key, None)
        self._proven[key] = None
        if len(self._proven) > self._size:
            self._proven.popitem(last=False)

    def fail(self, key: ProvenKey) -> None:
        self._proven.pop(key, None)
        self._failed[key] = clock.now() + self._retry_after
        self._failed.move_to_end(key)
        if len(self._failed) > self._size:
            self._failed.popitem(last=False)

    def recently_failed(self, key: ProvenKey) -> bool:
        until = self._failed.get(key)
        if until is None:
            return False
        if clock.now() < until:
            return True
        del self._failed[key]
        return False


def check_id(value: object, what: str = "id") -> bytes:
    """A 20-byte id from a request, or BadRequest."""
    if not isinstance(value, bytes) or len(value) != ID_LEN:
        raise BadRequest(f"{what} must be {ID_LEN} bytes")
    return value


class Admission:
    """Who is probed and who is admitted (a mixin of ``KadshareProtocol``): unknown
    requesters get a rate-limited ping with a nonce; a contact is welcomed only once
    it proved its id at its address."""

    config: DhtConfig
    stats: Counter[str]
    router: RoutingTable
    _ids: ProvenIds
    _proving: set[bytes]
    _probed: OrderedDict[Address, float]
    _probe_tokens: float
    _probe_refill: float

    if TYPE_CHECKING:
        def _me(self) -> bytes: ...
        def backing_off(self) -> bool: ...
        def spawn(self, coro: Any) -> asyncio.Task | None: ...
        async def call_ping(self, node_to_ask: Node) -> dict | None: ...
        def welcome_if_new(self, node: Node) -> None: ...

    def _note_sender(self, addr: Address, sender_id: object) -> None:
        """Probe an unknown requester, or a known id writing from a new address (a
        restarted peer); it enters the table only if it answers us there."""
        sender_id = check_id(sender_id, "sender id")
        if sender_id == self._me():
            return
        node = KadNode(sender_id, addr[0], addr[1])
        if self.router.contains(sender_id) and self.router.known_elsewhere(node) is None:
            return
        if (sender_id, addr) in self._ids:
            self.welcome_if_new(node)  # proved this id at this address before
            return
        if not self.router.could_enter(node):
            self.router.note_candidate(node)  # proven only if a slot frees
            return
        now = clock.now()
        seen = self._probed.get(addr)
        if seen is not None and now - seen < 30.0:
            return
        rate = self.config.welcome_pings_per_second
        self._probe_tokens = min(rate, self._probe_tokens + (now - self._probe_refill) * rate)
        self._probe_refill = now
        if self._probe_tokens < 1:
            self.stats["probes_skipped"] += 1
            return
        if self.backing_off():
            self.stats["probes_backed_off"] += 1
            return
        self._probe_tokens -= 1
        self._probed[addr] = now
        if len(self._probed) > self.config.probe_memory:
            self._probed.popitem(last=False)
        self.spawn(self.call_ping(node))

    def admit_proven(self, node: Node) -> None:
        """Enter a contact whose id was proven out of band (see ``DhtNode.prefill``)."""
        self._ids.add((node.id, (node.ip, node.port)))
        self.router.add_contact(node)

    def _admit_if_proven(self, node: Node, addr: Address, body: dict,
                         nonce: bytes | None) -> None:
        """Welcome ``node`` if it proved its id at ``addr`` (now, with ``nonce``, or
        before); otherwise ask for a proof once, with a ping carrying a nonce."""
        key = (node.id, addr)
        if key in self._ids:
            self.welcome_if_new(node)
        elif nonce is not None:
            if check_proof(body, nonce, self._me(), node.id):
                self.stats["id_proofs_ok"] += 1
                self._ids.add(key)
                self.welcome_if_new(node)
            else:
                self.stats["id_proofs_failed"] += 1
                self._ids.fail(key)
        elif not self.router.could_enter(node):
            self.router.note_candidate(node)  # proven only if a slot frees
        elif node.id not in self._proving and not self._ids.recently_failed(key):
            self._proving.add(node.id)
            self.spawn(self._ask_proof(node))

    def offer_slot(self, node: Node) -> None:
        """A replacement may take a freed slot: at once if it proved its id at its
        address before, else after it answers a ping with a proof."""
        key = (node.id, (node.ip, node.port))
        if key in self._ids:
            self.welcome_if_new(node)
        elif node.id not in self._proving and not self._ids.recently_failed(key):
            self._proving.add(node.id)
            self.spawn(self._ask_proof(node, refill=True))
        else:
            self.router.fill_slot(self.router.buckets[self.router.get_bucket_for(node)])

    async def _ask_proof(self, node: Node, refill: bool = False) -> None:
        """Ping ``node`` for a proof; when it was offered a freed slot and fails, the
        next replacement is offered the slot."""
        try:
            answered = await self.call_ping(node)
        finally:
            self._proving.discard(node.id)
        if refill and answered is None:
            self.router.fill_slot(self.router.buckets[self.router.get_bucket_for(node)])
