"""The files this peer shares: the share folder (with subfolders) plus files shared by path.

Each file is hashed once: its id is the Merkle root over its chunk hashes
(``kadcommon.merkle``), and the chunk hashes let a client verify each piece from any
source, after checking them against the id. Hashes are cached by
(real path, size, mtime) in ``DATA/hashcache.msgpack`` so a restart does not rehash,
and hashing runs in a worker thread so the event loop keeps serving.

Files outside the share folder are never served from it: hidden names are skipped,
symlinks are followed only when their target stays inside the folder, and every
serve re-checks that the bytes on disk still match what was hashed.

The data folder (private key, token, caches) is never shared, wherever it lies, even
through a symlink or ``POST /files``. A file found by a scan is hashed only once its
size and mtime have settled (``settle_seconds``), so a file still being copied in, or a
download still being written, is not announced at every size it passes through.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kadcommon.merkle import CHUNK_SIZE
from kadcommon.merkle import hash_file as merkle_hash_file
from pserver.datadir import load_msgpack, save_msgpack
from pserver.errors import FileNotShared, InvalidFileId, PeerError
from pserver.sharewalk import Listed, SettleGate, is_within, walk_share_folder

log = logging.getLogger(__name__)

CACHE_FILE = "hashcache.msgpack"
SHARES_FILE = "shares.msgpack"
CACHE_VERSION = 2  # 2: Merkle file ids (1 held whole-file SHA-256 ids)
_FILE_ID = re.compile(r"[0-9a-f]{64}")
#: Prefix of upload temp files inside the share folder (hidden, so never scanned).
UPLOAD_TMP_PREFIX = ".kadshare-upload-"
#: Seconds of hashing after which a scan shows (and caches) the files hashed so far
#: (``NodeConfig.publish_every``).
PUBLISH_EVERY = 5.0


def normalise_file_id(value: str) -> str:
    """Return the lowercase id, or raise :class:`InvalidFileId`."""
    if not isinstance(value, str):
        raise InvalidFileId("file id must be a string")
    lowered = value.strip().lower()
    if not _FILE_ID.fullmatch(lowered):
        raise InvalidFileId(f"malformed file id {value[:80]!r}: expected 64 hex characters")
    return lowered


@dataclass(frozen=True)
class SharedFile:
    """One shared file: what is announced and served."""

    file_id: str
    name: str  # relative POSIX path inside the share folder, or the base name of a ref
    size: int
    path: Path  # real path on disk
    mtime_ns: int
    chunk_size: int
    chunk_hashes: tuple[bytes, ...]
    in_share_dir: bool

    def as_json(self) -> dict[str, object]:
        return {"file_id": self.file_id, "name": self.name, "size": self.size}


def hash_file(path: Path, chunk_size: int) -> tuple[str, tuple[bytes, ...], os.stat_result]:
    """Merkle file id and chunk leaves of a file, read once (runs in a worker thread).

    Returns the stat taken before reading; the caller compares it with a later stat to
    notice a file that changed while it was hashed. ``chunk_size`` must be the protocol's
    ``CHUNK_SIZE``: it is part of the id's definition.
    """
    if chunk_size != CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} is not the protocol's {CHUNK_SIZE}")
    return merkle_hash_file(path)


class Catalog:
    """Index of shared files, kept in step with the disk by :meth:`scan`."""

    def __init__(
        self, share_dir: Path | None, data_dir: Path, chunk_size: int,
        settle_seconds: float = 0.0, publish_every: float = PUBLISH_EVERY,
    ) -> None:
        self.share_dir = share_dir.resolve() if share_dir is not None else None
        self.data_dir = data_dir
        self._private_root = os.path.realpath(data_dir)  # never shared, whatever the layout
        self.chunk_size = chunk_size
        self.settle_seconds = settle_seconds
        self.publish_every = publish_every
        self._gate = SettleGate(settle_seconds)
        #: real paths whose content is known complete (verified uploads, POST /files).
        self._settled: set[str] = set()
        #: How many files were actually hashed (the cache saves the rest); tests read it.
        self.hash_calls = 0
        #: Seconds the last listing of the share folder took (the node paces scans by it).
        self.last_walk_seconds = 0.0
        self._cache: dict[str, tuple[int, int, str, tuple[bytes, ...]]] = {}
        self._cache_dirty = False
        self._refs: list[str] = []  # real paths shared by reference (POST /files)
        self._unshared: set[str] = set()  # ids withdrawn by DELETE /files/{id}
        self._by_id: dict[str, SharedFile] = {}
        self._lock = asyncio.Lock()
        self._warned: set[str] = set()
        #: Awaited when a long scan publishes partial results (the node announces them).
        self.on_progress: Callable[[], Awaitable[None]] | None = None

    # ---- persistence -------------------------------------------------------------

    def remove_stale_uploads(self) -> int:
        """Delete upload temp files a killed run left in the share folder; returns how many.

        Only this peer writes them (the data-folder lock makes it the only one running).
        """
        if self.share_dir is None:
            return 0
        removed = 0
        try:
            names = os.listdir(self.share_dir)
        except OSError:
            return 0
        for name in names:
            if name.startswith(UPLOAD_TMP_PREFIX) and name.endswith(".part"):
                try:
                    os.unlink(self.share_dir / name)
                    removed += 1
                except OSError as exc:
                    log.warning("cannot remove stale upload %s: %s", name, exc.strerror)
        if removed:
            log.info("removed %d unfinished upload(s) left by a previous run", removed)
        return removed

    def load(self) -> None:
        """Read the hash cache and the share list left by a previous run."""
        raw = load_msgpack(self.data_dir / CACHE_FILE, {})
        if isinstance(raw, dict) and raw.get("version") == CACHE_VERSION:
            if raw.get("chunk_size") == self.chunk_size:
                for key, value in (raw.get("files") or {}).items():
                    try:
                        size, mtime_ns, file_id, hashes = value
                        self._cache[str(key)] = (
                            int(size), int(mtime_ns), normalise_file_id(file_id),
                            tuple(bytes(h) for h in hashes),
                        )
                    except (TypeError, ValueError, PeerError):
                        self._cache_dirty = True
        shares = load_msgpack(self.data_dir / SHARES_FILE, {})
        if isinstance(shares, dict):
            self._refs = [str(p) for p in shares.get("refs", []) if isinstance(p, str)]
            self._unshared = {
                str(i) for i in shares.get("unshared", []) if isinstance(i, str)
            }

    def save(self) -> None:
        """Write the hash cache if it changed (atomically)."""
        if not self._cache_dirty:
            return
        files = {k: [s, m, fid, list(h)] for k, (s, m, fid, h) in self._cache.items()}
        save_msgpack(
            self.data_dir / CACHE_FILE,
            {"version": CACHE_VERSION, "chunk_size": self.chunk_size, "files": files},
        )
        self._cache_dirty = False

    def _save_shares(self) -> None:
        save_msgpack(
            self.data_dir / SHARES_FILE,
            {"refs": self._refs, "unshared": sorted(self._unshared)},
        )

    # ---- queries -----------------------------------------------------------------

    def files(self) -> list[SharedFile]:
        """Shared files, sorted by name."""
        return sorted(self._by_id.values(), key=lambda f: (f.name, f.file_id))

    def get(self, file_id: str) -> SharedFile:
        """The shared file with this id; raise :class:`FileNotShared` or :class:`InvalidFileId`."""
        entry = self._by_id.get(normalise_file_id(file_id))
        if entry is None:
            raise FileNotShared(f"file {file_id[:16]}… is not shared by this peer")
        return entry

    def __len__(self) -> int:
        return len(self._by_id)

    def open_for_serving(self, file_id: str) -> tuple[SharedFile, int]:
        """Open a shared file for reading after checking it is still what was hashed.

        Returns the entry and an OS file descriptor the caller must close. Refuses a
        file whose real path left the share folder or whose size/mtime changed.
        """
        entry = self.get(file_id)
        real = os.path.realpath(entry.path)
        if self.is_private(real):
            raise FileNotShared(f"{entry.name} is in the data folder, which is never shared")
        if entry.in_share_dir and self.share_dir is not None:
            if not is_within(real, str(self.share_dir)):
                raise FileNotShared(f"{entry.name} now points outside the share folder")
        try:
            fd = os.open(real, os.O_RDONLY)
        except OSError as exc:
            raise FileNotShared(f"{entry.name} can no longer be read: {exc.strerror}") from exc
        st = os.fstat(fd)
        if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
            os.close(fd)
            raise FileNotShared(f"{entry.name} changed on disk; it is being rehashed")
        return entry, fd

    def is_private(self, real: str) -> bool:
        """True for the data folder and anything inside it (keys, token, caches)."""
        return is_within(real, self._private_root)

    # ---- changes -----------------------------------------------------------------

    async def scan(self) -> bool:
        """Bring the index in step with the disk; True when the shared set changed."""
        async with self._lock:
            before = self._signature()
            walk_started = time.monotonic()
            listing = await asyncio.to_thread(self.walk)
            self.last_walk_seconds = time.monotonic() - walk_started
            share_entries: list[SharedFile] = []
            seen: set[str] = set()
            published_at, hashed_at_publish = time.monotonic(), self.hash_calls
            listing = self._settled_only(listing)
            for name, real, st in listing:
                seen.add(real)
                entry = await self._entry_for(name, real, st, in_share_dir=True)
                if entry is not None:
                    share_entries.append(entry)
                if (self.hash_calls != hashed_at_publish
                        and time.monotonic() - published_at >= self.publish_every):
                    await self._publish_partial(share_entries, seen)
                    published_at, hashed_at_publish = time.monotonic(), self.hash_calls
            ref_entries: list[SharedFile] = []
            for real in self._refs:
                try:
                    st = os.stat(real)
                except OSError:
                    self._warn_once(real, "shared file %s is missing; skipped until it returns")
                    continue
                if not stat.S_ISREG(st.st_mode) or self.is_private(real):
                    continue
                seen.add(real)
                entry = await self._entry_for(os.path.basename(real), real, st, in_share_dir=False)
                if entry is not None:
                    ref_entries.append(entry)
            seen.update(self._gate.waiting_paths())  # keep the cache of a file being rewritten
            for key in [k for k in self._cache if k not in seen]:
                del self._cache[key]
                self._cache_dirty = True
            self._rebuild(share_entries + ref_entries)
            await asyncio.to_thread(self.save)
            return self._signature() != before

    async def _publish_partial(self, done: list[SharedFile], seen: set[str]) -> None:
        """During a long hashing run: show what is hashed so far and save the cache.

        Files not reached yet keep their previous entries; a crash mid-run loses at most
        ``publish_every`` seconds of hashing.
        """
        pending = [e for e in self._by_id.values() if str(e.path) not in seen]
        self._rebuild(done + pending)
        await asyncio.to_thread(self.save)
        if self.on_progress is not None:
            try:
                await self.on_progress()
            except Exception:  # announcing is retried after the scan anyway
                log.exception("publishing hashing progress failed")

    async def share_path(self, path: Path) -> SharedFile:
        """Share a file on this machine by reference (``POST /files``)."""
        if not path.is_absolute():
            raise PeerError("path must be absolute")
        real = await asyncio.to_thread(os.path.realpath, path)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise PeerError(f"cannot read {path}: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise PeerError(f"{path} is not a regular file")
        if self.is_private(real):
            raise PeerError(f"{path} is in the node's data folder, which is never shared")
        if not os.access(real, os.R_OK):
            raise PeerError(f"cannot read {path}: permission denied")
        inside = (
            self.share_dir is not None
            and is_within(real, str(self.share_dir))
            and not any(
                part.startswith(".")
                for part in Path(real).relative_to(self.share_dir).parts
            )
        )  # a hidden file inside the folder is not scanned, so it is shared by reference
        async with self._lock:
            name = os.path.basename(real)
            self._settled.add(real)  # the user asked for it: no settle wait
            entry = await self._entry_for(name, real, st, in_share_dir=inside)
            if entry is None:
                raise PeerError(f"{path} changed while it was hashed; try again")
            self._unshared.discard(entry.file_id)
            if not inside and real not in self._refs:
                self._refs.append(real)
            await asyncio.to_thread(self._save_shares)
        await self.scan()
        return self.get(entry.file_id)

    async def unshare(self, file_id: str) -> SharedFile:
        """Stop sharing a file (``DELETE /files/{id}``); the file on disk is untouched."""
        entry = self.get(file_id)
        async with self._lock:
            self._unshared.add(entry.file_id)
            self._refs = [r for r in self._refs if self._cached_id(r) != entry.file_id]
            await asyncio.to_thread(self._save_shares)
            self._by_id.pop(entry.file_id, None)
        return entry

    async def add_verified(self, path: Path, file_id: str, chunk_hashes: Iterable[bytes]) -> None:
        """Record a file whose hashes are already known (a verified upload), then rescan."""
        st = os.stat(path)
        real = await asyncio.to_thread(os.path.realpath, path)
        async with self._lock:
            self._settled.add(real)  # written and verified by us: complete
            self._cache[real] = (st.st_size, st.st_mtime_ns, file_id, tuple(chunk_hashes))
            self._cache_dirty = True
            self._unshared.discard(file_id)
        await self.scan()

    # ---- internals ---------------------------------------------------------------

    def _signature(self) -> frozenset[tuple[str, str, int]]:
        return frozenset((f.file_id, f.name, f.size) for f in self._by_id.values())

    def _rebuild(self, entries: list[SharedFile]) -> None:
        """Index by id; of several names for one id the file's own name wins over a
        symlink's, so a link added later never renames an advertised file."""
        by_id: dict[str, SharedFile] = {}
        for entry in sorted(
            entries, key=lambda e: (not e.in_share_dir, self._via_link(e), e.name)
        ):
            if entry.file_id in self._unshared:
                continue
            by_id.setdefault(entry.file_id, entry)
        self._by_id = by_id

    def _via_link(self, entry: SharedFile) -> bool:
        if not entry.in_share_dir or self.share_dir is None:
            return False
        return os.path.realpath(self.share_dir / entry.name) != os.path.normpath(
            self.share_dir / entry.name
        )

    def _settled_only(self, listing: list[Listed]) -> list[Listed]:
        """Drop files whose size or mtime changed within ``settle_seconds``."""

        def known(real: str, st: os.stat_result) -> bool:
            cached = self._cache.get(real)
            unchanged = cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns)
            return unchanged or real in self._settled

        return self._gate.settled(listing, known)

    @property
    def settling(self) -> int:
        """How many files wait for their size and mtime to settle (the node rescans)."""
        return len(self._gate)

    def id_if_hashed(self, real: str, st: os.stat_result) -> str | None:
        """The id of a file already hashed at this size and mtime (folder manifests)."""
        cached = self._cache.get(real)
        return cached[2] if cached and cached[:2] == (st.st_size, st.st_mtime_ns) else None

    def _cached_id(self, real: str) -> str | None:
        cached = self._cache.get(real)
        return cached[2] if cached else None

    async def _entry_for(
        self, name: str, real: str, st: os.stat_result, *, in_share_dir: bool
    ) -> SharedFile | None:
        cached = self._cache.get(real)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            file_id, hashes = cached[2], cached[3]
        else:
            try:
                file_id, hashes, before = await asyncio.to_thread(
                    hash_file, Path(real), self.chunk_size
                )
                after = os.stat(real)
            except OSError as exc:
                self._warn_once(real, f"cannot hash %s ({exc.strerror}); skipped")
                return None
            self.hash_calls += 1
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                log.debug("%s changed while hashing; next scan retries", name)
                return None
            st = after
            self._cache[real] = (st.st_size, st.st_mtime_ns, file_id, hashes)
            self._cache_dirty = True
        return SharedFile(
            file_id=file_id, name=name, size=st.st_size, path=Path(real),
            mtime_ns=st.st_mtime_ns, chunk_size=self.chunk_size, chunk_hashes=hashes,
            in_share_dir=in_share_dir,
        )

    def walk(self) -> list[Listed]:
        """List (relative name, real path, stat) of shareable files (worker thread)."""
        if self.share_dir is None:
            return []
        return walk_share_folder(str(self.share_dir), self.is_private, self._warn_once)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, key)
