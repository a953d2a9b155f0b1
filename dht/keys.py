"""Namespaced DHT keys: ``file:<sha256 hex>`` and ``kw:<word>``, hashed to 160 bits.

Each name is hashed once with SHA-1 to give the 20-byte key the routing table works
with.  (Upstream ``kademlia`` hashes keys again inside ``welcome_if_new``; kadshare
never hashes a stored key twice, see docs/PROTOCOL.md.)
"""

from __future__ import annotations

import hashlib
import re

from .errors import InvalidRecord

_FILE_ID = re.compile(r"[0-9a-f]{64}")
_NODE_ID = re.compile(r"[0-9a-f]{40}")


def check_file_id(file_id: object) -> str:
    """Return ``file_id`` if it is 64 lowercase hex chars (a SHA-256), else raise."""
    if not isinstance(file_id, str) or not _FILE_ID.fullmatch(file_id):
        raise InvalidRecord(
            f"file_id must be 64 lowercase hex characters (a SHA-256), got {file_id!r:.80}"
        )
    return file_id


def is_node_id_hex(value: object) -> bool:
    """True for 40 lowercase hex characters."""
    return isinstance(value, str) and bool(_NODE_ID.fullmatch(value))


def file_key_name(file_id: str) -> str:
    """The key name under which providers of ``file_id`` are stored."""
    return "file:" + file_id


def keyword_key_name(word: str) -> str:
    """The key name under which files whose name contains ``word`` are listed."""
    return "kw:" + word


def digest_key(name: str) -> bytes:
    """SHA-1 of the key name: the 160-bit key that decides which nodes store it."""
    return hashlib.sha1(name.encode("utf-8")).digest()


def file_key(file_id: str) -> bytes:
    """Storage key of a file's provider records."""
    return digest_key(file_key_name(check_file_id(file_id)))


def keyword_key(word: str) -> bytes:
    """Storage key of a keyword's entries."""
    return digest_key(keyword_key_name(word))
