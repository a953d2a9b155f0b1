"""Files this peer is still downloading, served chunk by chunk (a *partial provider*).

A local client (``kadshare get`` through this node's REST API) registers the part file
of a download (``POST /partials``) and reports the chunks it has written (``PUT``,
about twice a second). The node hashes each reported chunk itself against the file's
leaves (checked against the file id) before it sets that chunk's bit, so a stale or
wrong report can never make it serve unverified bytes. ``GetInfo``/``Have`` advertise
only those bits; ``Download`` refuses any other chunk with FAILED_PRECONDITION. A
registration not refreshed within ``lease`` seconds (its client died) is dropped with
its partial provider record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from kadcommon import bitfield
from kadcommon.merkle import CHUNK_SIZE, leaf_hash, leaves_match
from pserver.errors import FileNotShared, PeerError

log = logging.getLogger(__name__)

DEFAULT_LEASE = 30.0
DEFAULT_LIMIT = 64  # downloads served at once while in progress


class ChunkNotHeld(PeerError):
    """A range touches a chunk this partial provider has not verified (FAILED_PRECONDITION)."""


class PartialFile:
    """One part file being downloaded here, and the chunks of it this node verified."""

    def __init__(self, file_id: str, name: str, size: int, leaves: list[bytes],
                 path: Path, fd: int) -> None:
        self.file_id = file_id
        self.name = name
        self.size = size
        self.leaves = leaves
        self.path = path
        self.fd = fd
        self.verified = bytearray(len(leaves))
        self.updated = time.monotonic()
        self.refused = 0  # reported chunks whose bytes did not match (logged once)

    @property
    def chunks(self) -> int:
        return len(self.leaves)

    def held(self) -> int:
        return sum(self.verified)

    def have(self) -> bytes:
        """The packed ``have`` bitfield (kadcommon.bitfield)."""
        return bitfield.pack(self.verified)

    def check_range(self, start: int, end: int) -> None:
        """Raise ChunkNotHeld unless every chunk of bytes [start, end) is verified here."""
        if end <= start:
            return
        for i in range(start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1):
            if not self.verified[i]:
                raise ChunkNotHeld(
                    f"chunk {i} not held here (partial provider, {self.held()} of "
                    f"{self.chunks} chunks verified); ask Have again or another source")

    def verify(self, indexes: list[int]) -> int:
        """Hash the reported chunks (in a thread); set the bits of those that match."""
        bad = 0
        for i in indexes:
            want = min(CHUNK_SIZE, self.size - i * CHUNK_SIZE)
            try:
                data = os.pread(self.fd, want, i * CHUNK_SIZE)
            except OSError:
                data = b""
            if len(data) == want and leaf_hash(data) == self.leaves[i]:
                self.verified[i] = 1
            else:
                bad += 1
        return bad

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _read_leaves(path: Path, file_id: str, size: int) -> list[bytes]:
    """The raw 32-byte leaves in ``path``; refused unless they hash to ``file_id``."""
    chunks = -(-size // CHUNK_SIZE)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PeerError(f"cannot read the leaves file {path}: {exc.strerror}") from exc
    if len(raw) != 32 * chunks:
        raise PeerError(f"the leaves file holds {len(raw)} bytes, not 32 x {chunks} chunks")
    leaves = [raw[i:i + 32] for i in range(0, len(raw), 32)]
    if not leaves_match(file_id, size, leaves):
        raise PeerError("the leaves (and size) do not hash to the file id")
    return leaves


class PartialFiles:
    """The partial files of this node; ``announce``/``withdraw`` keep the DHT in step."""

    def __init__(self, *, lease: float = DEFAULT_LEASE, limit: int = DEFAULT_LIMIT,
                 announce: Callable[[PartialFile], Awaitable[None]] | None = None,
                 withdraw: Callable[[str], Awaitable[None]] | None = None,
                 is_private: Callable[[str], bool] = lambda real: False) -> None:
        self.lease = lease
        self.limit = limit
        self.announce = announce
        self.withdraw = withdraw
        self.is_private = is_private
        self._files: dict[str, PartialFile] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, file_id: str) -> PartialFile | None:
        return self._files.get(file_id.lower())

    def require(self, file_id: str) -> PartialFile:
        entry = self.get(file_id)
        if entry is None:
            raise FileNotShared(f"file {file_id[:16]}… is not being downloaded here")
        return entry

    def files(self) -> list[PartialFile]:
        return list(self._files.values())

    async def register(self, file_id: str, part: Path, leaves: Path, name: str,
                       size: int) -> PartialFile:
        """Start serving the verified chunks of ``part`` (a download's part file)."""
        file_id = file_id.lower()
        old = self._files.get(file_id)
        if old is not None and old.path == part:
            old.updated = time.monotonic()
            return old
        if old is not None and time.monotonic() - old.updated <= self.lease:
            raise PeerError(f"a download of this file in progress is already served here "
                            f"(from {old.path}); one at a time")
        if old is None and len(self._files) >= self.limit:
            raise PeerError(f"this node already serves {self.limit} downloads in progress")
        real = await asyncio.to_thread(os.path.realpath, part)
        if self.is_private(real):
            raise PeerError("a part file inside the data folder is never served")
        found = await asyncio.to_thread(_read_leaves, leaves, file_id, size)
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError as exc:
            raise PeerError(f"cannot open the part file {part}: {exc.strerror}") from exc
        if os.fstat(fd).st_size != size:
            os.close(fd)
            raise PeerError(f"the part file {part} is not {size} bytes long")
        if old is not None:
            old.close()
        entry = PartialFile(file_id, name, size, found, part, fd)
        self._files[file_id] = entry
        log.info("serving %s while it downloads (%d chunks)", name, entry.chunks)
        if self.announce is not None and old is None:
            self._spawn(self.announce(entry))
        return entry

    async def update(self, file_id: str, have: bytes) -> PartialFile:
        """The client wrote these chunks: verify the new ones; renews the lease."""
        entry = self.require(file_id)
        try:
            claimed = bitfield.unpack(have, entry.chunks)
        except ValueError as exc:
            raise PeerError(str(exc)) from exc
        entry.updated = time.monotonic()
        new = [i for i in range(entry.chunks) if claimed[i] and not entry.verified[i]]
        if new:
            bad = await asyncio.to_thread(entry.verify, new)
            if bad and not entry.refused:
                log.warning("%s: %d reported chunk(s) do not match their hash; not served",
                            entry.name, bad)
            entry.refused += bad
        return entry

    async def remove(self, file_id: str) -> PartialFile:
        """Stop serving a download in progress (finished, cancelled or expired)."""
        entry = self.require(file_id)
        del self._files[entry.file_id]
        entry.close()
        log.info("no longer serving %s as a download in progress", entry.name)
        if self.withdraw is not None:
            self._spawn(self.withdraw(entry.file_id))
        return entry

    async def expire(self) -> int:
        """Drop registrations whose client stopped reporting; returns how many."""
        now = time.monotonic()
        stale = [f for f, e in self._files.items() if now - e.updated > self.lease]
        for file_id in stale:
            await self.remove(file_id)
        return len(stale)

    async def expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            await self.expire()

    def _spawn(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await job
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the DHT may be unreachable: the lease ends it
                log.warning("partial provider record: %s", exc or type(exc).__name__)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for entry in self._files.values():
            entry.close()
        self._files.clear()
