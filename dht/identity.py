"""Ed25519 identity of a node; the node id is derived from the public key.

node_id = SHA-1(raw 32-byte public key): 160 bits, so it fits kademlia's routing table,
and nobody can claim an id without holding the matching private key (records carry the
public key and a signature, and storing nodes check the binding).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from kadcommon.atomic import write_atomic

from .errors import DhtError

log = logging.getLogger(__name__)

_PEM_HEADER = b"-----BEGIN PRIVATE KEY-----"


def node_id_for(public_key: bytes) -> bytes:
    """The 20-byte node id bound to a raw Ed25519 public key."""
    return hashlib.sha1(public_key).digest()


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Identity:
    """A node's key pair; sign() signs, node_id/public_key identify."""

    __slots__ = ("_private", "public_key", "node_id")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.node_id: bytes = node_id_for(self.public_key)

    @classmethod
    def generate(cls, rng: random.Random | None = None) -> Identity:
        """A fresh random identity; from ``rng`` if given (repeatable simulations only:
        a key drawn from a seeded generator is not secret), else from the OS."""
        if rng is not None:
            return cls(Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        """Rebuild an identity from its 32-byte raw private key."""
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, path: Path | str) -> Identity:
        """Load the PEM key at ``path``, or create it (mode 0600) if it does not exist."""
        path = Path(path)
        if path.exists():
            data = path.read_bytes()
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError) as exc:
                raise DhtError(f"identity file {path} is not a PEM private key") from exc
            if not isinstance(key, Ed25519PrivateKey):
                raise DhtError(f"identity file {path} does not hold an Ed25519 key")
            if path.stat().st_mode & 0o077:
                log.warning("identity file %s is readable by others; fixing to 0600", path)
                os.chmod(path, 0o600)
            return cls(key)
        identity = cls.generate()
        identity.save(path)
        log.info("created identity %s in %s", identity.node_id_hex[:8], path)
        return identity

    def save(self, path: Path | str) -> None:
        """Write the private key as PEM, mode 0600, atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(path, pem, mode=0o600)

    @property
    def node_id_hex(self) -> str:
        """The node id as 40 lowercase hex characters."""
        return self.node_id.hex()

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) of ``message``."""
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"Identity({self.node_id_hex[:8]}…)"
