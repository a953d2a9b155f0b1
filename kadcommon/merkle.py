"""Merkle file ids: one 32-byte id that vouches for every 1 MiB chunk of a file.

Why a tree and not SHA-256 of the whole content: with a whole-file hash a client can only
check a provider's per-chunk hashes after fetching everything, so one lying provider
wastes a whole download. With a tree, the chunk list a provider sends is checked against
the id before any byte is fetched, and each chunk is checked against its list entry as
it arrives. BitTorrent v2 (BEP 52) is the model; kadshare differs in three documented
ways (docs/PROTOCOL.md, "File ids"):

* leaves are whole ``CHUNK_SIZE`` chunks (BEP 52: 16 KiB blocks, then a piece layer);
* domain separation: a leaf is ``SHA-256(0x00 || chunk)``, an inner node
  ``SHA-256(0x01 || left || right)``, so an inner node can never pass for a chunk;
* the id also binds the file size: ``SHA-256(0x02 || size as u64 big-endian || root)``,
  so a provider cannot lie about the length of the last chunk.

Padding: the leaf row is padded with 32 zero bytes up to a power of two (as BEP 52 does).
A file of one chunk has its leaf as root; the empty file has no chunks and the zero
hash as root.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

#: Bytes per chunk. Part of the id's definition: every peer must use this value.
CHUNK_SIZE = 1024 * 1024
HASH_LEN = 32
LEAF_TAG = b"\x00"
NODE_TAG = b"\x01"
ROOT_TAG = b"\x02"
PAD = bytes(HASH_LEN)
MAX_SIZE = 2**63 - 1


def leaf_hash(chunk: bytes | bytearray | memoryview) -> bytes:
    """The leaf of one chunk: ``SHA-256(0x00 || chunk)`` (hashlib drops the GIL on big ones)."""
    digest = hashlib.sha256(LEAF_TAG)
    digest.update(chunk)
    return digest.digest()


def chunk_count(size: int) -> int:
    """How many chunks a file of ``size`` bytes has (0 for the empty file)."""
    return -(-size // CHUNK_SIZE)


def chunk_length(size: int, index: int) -> int:
    """Bytes in chunk ``index`` of a ``size``-byte file (the last one may be short)."""
    return min(CHUNK_SIZE, size - index * CHUNK_SIZE)


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the binary tree over ``leaves``, padded with zero hashes to a power of two."""
    if not leaves:
        return PAD
    row = list(leaves)
    width = 1
    while width < len(row):
        width *= 2
    row.extend([PAD] * (width - len(row)))
    while len(row) > 1:
        row = [hashlib.sha256(NODE_TAG + row[i] + row[i + 1]).digest()
               for i in range(0, len(row), 2)]
    return row[0]


def file_id_from_leaves(size: int, leaves: Sequence[bytes]) -> str:
    """The 64-hex file id of a ``size``-byte file whose chunk leaves are ``leaves``.

    Raises ValueError if the number of leaves does not fit the size or one is not 32 bytes.
    """
    if not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise ValueError(f"size {size!r} out of range")
    if len(leaves) != chunk_count(size):
        raise ValueError(f"{len(leaves)} chunk hashes for {chunk_count(size)} chunks")
    if any(len(leaf) != HASH_LEN for leaf in leaves):
        raise ValueError("a chunk hash is not 32 bytes")
    root = tree_root(leaves)
    return hashlib.sha256(ROOT_TAG + size.to_bytes(8, "big") + root).hexdigest()


def leaves_match(file_id: str, size: int, leaves: Sequence[bytes]) -> bool:
    """True if ``leaves`` (a provider's chunk list) and ``size`` hash to ``file_id``."""
    try:
        return file_id_from_leaves(size, leaves) == file_id.lower()
    except ValueError:
        return False


def leaves_of_bytes(data: bytes) -> list[bytes]:
    """Chunk leaves of in-memory content (tests, small files)."""
    view = memoryview(data)
    return [leaf_hash(view[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE)]


def file_id_of_bytes(data: bytes) -> str:
    """The file id of in-memory content."""
    return file_id_from_leaves(len(data), leaves_of_bytes(data))


def hash_file(path: str | os.PathLike[str]) -> tuple[str, tuple[bytes, ...], os.stat_result]:
    """(file id, chunk leaves, stat before reading) of a file, read once.

    Run it in a worker thread: hashlib releases the GIL. The caller compares the stat
    with a later one to notice a file that changed while it was hashed.
    """
    leaves: list[bytes] = []
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    with open(Path(path), "rb", buffering=0) as handle:
        before = os.fstat(handle.fileno())
        size = 0
        while True:
            filled = 0
            while filled < CHUNK_SIZE:
                got = handle.readinto(view[filled:])
                if not got:
                    break
                filled += got
            if not filled:
                break
            leaves.append(leaf_hash(view[:filled]))
            size += filled
            if filled < CHUNK_SIZE:
                break
    return file_id_from_leaves(size, leaves), tuple(leaves), before


def file_id_of_path(path: str | os.PathLike[str]) -> str:
    """The file id of a file on disk (``kadshare id PATH``)."""
    return hash_file(path)[0]


class ChunkHasher:
    """Leaves of a byte stream fed in pieces of any size (uploads, ``put``)."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.size = 0
        self._chunk = hashlib.sha256(LEAF_TAG)
        self._fill = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(CHUNK_SIZE - self._fill, len(view))
            self._chunk.update(view[:take])
            self._fill += take
            self.size += take
            view = view[take:]
            if self._fill == CHUNK_SIZE:
                self.leaves.append(self._chunk.digest())
                self._chunk = hashlib.sha256(LEAF_TAG)
                self._fill = 0

    def finish(self) -> str:
        """The file id of everything fed (call once, at the end)."""
        if self._fill:
            self.leaves.append(self._chunk.digest())
            self._fill = 0
        return file_id_from_leaves(self.size, self.leaves)
