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

from collections import OrderedDict
from typing import Any

from . import clock
from .identity import Identity, node_id_for, verify_signature
from .transport import Address, BadRequest

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
