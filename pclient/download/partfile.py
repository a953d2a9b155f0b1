"""The part file of a download and its resume state.

Bytes go to a hidden ``.kadshare-dl-ID.part`` in the destination folder beside a small
JSON resume state ``.kadshare-dl-ID.part.state`` (which chunks are written and verified).
Both are named by the file id, not by the saved name, so a rerun finds them whichever
name or provider it uses; hidden, so a peer sharing that folder never announces them.

Trusting a state without re-hashing (docs/PROTOCOL.md, "Resume state"): while a download
runs, the part file's mtime is pinned to a stamp (set again after every write), and a
state is saved as data -> ``fdatasync`` of the part -> state to a temporary file ->
rename, recording the part's size, inode, device and the stamp. A rerun trusts the
chunks a state claims only if all four still match (nobody else wrote the file since:
a write sets the mtime to now); anything else re-hashes every claimed chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: downloads work, without the .part lock
    fcntl = None  # type: ignore[assignment]  # no fcntl on this platform: locking is skipped

from kadcommon.merkle import file_id_of_path, leaf_hash
from pclient.errors import DestinationError
from protos import kadshare_pb2

log = logging.getLogger(__name__)

STATE_VERSION = 1
PART_PREFIX = ".kadshare-dl-"
PART_SUFFIX = ".part"
STATE_SUFFIX = ".part.state"
#: Threads that re-hash the chunks a resume state claims (hashlib drops the GIL): a
#: rerun re-verifies on every core instead of one.
VERIFY_THREADS = max(1, min(8, os.cpu_count() or 1))
#: The part file's mtime can be pinned through its descriptor (futimens) here.
CAN_PIN = os.utime in os.supports_fd
_datasync = getattr(os, "fdatasync", os.fsync)  # (no fdatasync on macOS)


def _fingerprint(st: os.stat_result, mtime_ns: int) -> dict[str, int]:
    """What a state records of its part file: a rerun trusts it only if all match."""
    return {"size": st.st_size, "mtime_ns": mtime_ns, "ino": st.st_ino, "dev": st.st_dev}


def part_paths(directory: Path, file_id: str) -> tuple[Path, Path]:
    """(part file, resume state) of ``file_id`` in ``directory``: named by id, hidden."""
    base = directory / f"{PART_PREFIX}{file_id.lower()}"
    return base.with_name(base.name + PART_SUFFIX), base.with_name(base.name + STATE_SUFFIX)


def file_id_of(path: Path) -> str:
    """The Merkle file id of a file on disk (run in a thread: hashlib releases the GIL)."""
    return file_id_of_path(path)


def destination_error(exc: OSError, path: Path) -> DestinationError:
    """Map a filesystem error to a sentence about the destination."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        msg = f"disk full while writing {path}; free some space and rerun to resume"
    elif exc.errno in (errno.EROFS,):
        msg = f"cannot write {path}: the file system is read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        msg = f"cannot write {path}: permission denied"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        msg = f"cannot use {path.parent} as a download directory: not a directory"
    else:
        msg = f"cannot write {path}: {exc.strerror or exc}"
    return DestinationError(msg)


class PartFile:
    """The ``.part`` file of one download, the chunks verified in it, its resume state."""

    def __init__(self, file_id: str, info: kadshare_pb2.FileInfo, final: Path) -> None:
        self.file_id = file_id
        self.info = info
        self.size = info.size
        self.chunk_size = info.chunk_size or 1
        self.hashes = list(info.chunk_hashes)
        self.total_chunks = len(self.hashes)
        self.final = final
        self.part, self.state = part_paths(final.parent, file_id)
        self.done = bytearray(self.total_chunks)
        self.fd = -1
        self.opened = False
        self.resumed = 0
        self.done_bytes = 0
        self._last_save = 0.0
        #: The mtime this process pins on the part file (0: not pinned, states untrusted).
        self.stamp_ns = 0
        #: Chunks a rerun took over from a state without re-hashing them.
        self.trusted = 0
        self._saver: ThreadPoolExecutor | None = None  # syncs + saves off the event loop
        self._saving: Future[None] | None = None
        self._state_lock = threading.Lock()  # a state write vs the end of the download
        self._finished = False  # complete: no state is written any more

    def chunk_len(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    # -- resume state ----------------------------------------------------------------
    def _load_state(self) -> tuple[list[int], Any]:
        """Chunk indexes the saved state claims done, if it belongs to this file, and the
        part-file fingerprint it recorded after syncing (None if it has none)."""
        try:
            raw = json.loads(self.state.read_text())
            if not (
                raw.get("version") == STATE_VERSION
                and raw.get("file_id") == self.file_id
                and raw.get("size") == self.size
                and raw.get("chunk_size") == self.chunk_size
            ):
                return [], None
            bitmap = bytes.fromhex(raw.get("done", ""))
        except (OSError, ValueError, TypeError, AttributeError):
            return [], None
        claimed = [i for i in range(self.total_chunks) if i < len(bitmap) and bitmap[i]]
        return claimed, raw.get("part")

    def _trusts(self, recorded: Any, st: os.stat_result, claimed: int) -> bool:
        """Whether the claims of a state may be taken without re-hashing: the state was
        saved after an fdatasync of the part file, and the part file is the one it
        recorded (inode, device), unchanged since (size, pinned mtime). Logs why not."""
        if not claimed:
            return False
        if not isinstance(recorded, dict):
            log.info("resume state of %s has no synced part-file fingerprint: "
                     "re-hashing the %d chunks it claims", self.final.name, claimed)
            return False
        found = _fingerprint(st, st.st_mtime_ns)
        differ = [key for key in ("size", "mtime_ns", "ino", "dev")
                  if recorded.get(key) != found[key] or type(recorded.get(key)) is not int]
        if differ:
            log.info("resume state of %s does not match its part file (%s changed since "
                     "it was saved): not trusting it, re-hashing the %d chunks it claims",
                     self.final.name, ", ".join(differ), claimed)
            return False
        return True

    async def verify_claimed(self, claimed: list[int]) -> list[int]:
        """The chunks a state file claims that still match their leaf (a stale or
        tampered state costs nothing), re-hashed on ``VERIFY_THREADS`` threads, each
        taking a contiguous share so the reads stay sequential."""
        threads = max(1, min(VERIFY_THREADS, len(claimed)))
        n = len(claimed)
        shares = [claimed[k * n // threads:(k + 1) * n // threads] for k in range(threads)]
        found = await asyncio.gather(
            *(asyncio.to_thread(self._verify_claimed, share) for share in shares if share))
        return [i for good in found for i in good]

    def _verify_claimed(self, claimed: list[int]) -> list[int]:
        """Re-hash ``claimed`` chunks in one thread; those that match their leaf."""
        good = []
        with open(self.part, "rb") as fh:
            for i in claimed:
                fh.seek(i * self.chunk_size)
                data = fh.read(self.chunk_len(i))
                if leaf_hash(data) == self.hashes[i]:
                    good.append(i)
        return good

    def save_state(self, final: bool = False) -> None:
        """Save which chunks are verified and written.

        The claims are taken now (every chunk counted done has been written), then the
        part file is fdatasync'ed and the state written to a temporary file and renamed
        over the old one: a state on disk never claims bytes that are not on disk. Off
        the event loop, one save at a time (one still running: this one is skipped);
        ``final`` waits for it and saves inline (the exit path)."""
        if not self.opened:
            return
        doc: dict[str, Any] = {
            "version": STATE_VERSION,
            "file_id": self.file_id,
            "name": self.final.name,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "done": bytes(self.done).hex(),
        }
        if final:
            self._wait_saved()
            self._persist(doc)
            return
        if self._saving is not None and not self._saving.done():
            return  # the next chunk tries again
        if self._saver is None:
            self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kadshare-sync")
        try:
            fd = os.dup(self.fd)  # its own descriptor: the part may close before it is done
        except OSError as exc:
            log.warning("could not save resume state %s: %s", self.state, exc)
            return
        self._saving = self._saver.submit(self._persist, doc, fd)
        self._last_save = time.monotonic()

    def _persist(self, doc: dict[str, Any], fd: int = -1) -> None:
        """Sync the part file, then write ``doc`` (with the part's fingerprint if the
        sync succeeded and the mtime is pinned) to a temporary file and rename it; not
        once the download is complete. ``fd``: a descriptor of the part to sync and
        close (default: the part's own)."""
        try:
            _datasync(self.fd if fd < 0 else fd)
            if self.stamp_ns:
                doc["part"] = _fingerprint(os.fstat(self.fd if fd < 0 else fd), self.stamp_ns)
        except OSError as exc:  # the claims are still worth keeping, re-hashed
            log.warning("could not sync %s: %s", self.part, exc)
        finally:
            if fd >= 0:
                os.close(fd)
        tmp = self.state.with_name(self.state.name + ".tmp")
        with self._state_lock:
            if self._finished:
                return
            try:
                tmp.write_text(json.dumps(doc))
                os.replace(tmp, self.state)
            except OSError as exc:
                log.warning("could not save resume state %s: %s", self.state, exc)

    def _wait_saved(self) -> None:
        """Block until the save running in the background (if any) is on disk."""
        if self._saving is not None:
            with contextlib.suppress(Exception):
                self._saving.result()
            self._saving = None

    def _pin(self) -> None:
        """Set the part file's mtime to this run's stamp (again after every write).

        The stamp lies in the past, at a random nanosecond, so a write by anyone else
        (mtime = now) cannot produce it; it is read back, as file systems round it."""
        if not CAN_PIN or self.fd < 0:
            return
        if not self.stamp_ns:
            stamp = (time.time_ns() // 10**9 - 2) * 10**9 + secrets.randbelow(10**9)
            os.utime(self.fd, ns=(stamp, stamp))
            self.stamp_ns = os.fstat(self.fd).st_mtime_ns
        else:
            os.utime(self.fd, ns=(self.stamp_ns, self.stamp_ns))

    def finish_part(self) -> None:
        """The part file is complete: no state is saved any more (a sync still running
        finishes on its own descriptor), and the file gets a real mtime."""
        with self._state_lock:
            self._finished = True
        if self.stamp_ns:
            with contextlib.suppress(OSError):
                os.utime(self.fd)
            self.stamp_ns = 0

    # -- preparation -----------------------------------------------------------------
    async def open_part(self) -> None:
        """Open (or create) and lock the .part file; take over verified chunks from a state.

        The lock (flock, released when the fd closes) keeps a second ``kadshare get`` of
        the same file into the same directory from truncating this one's progress.
        """
        existed = self.part.exists()
        try:
            self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise destination_error(exc, self.part) from exc
        try:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.close_part()
            raise DestinationError(
                f"another download is already writing {self.part}; wait for it to finish "
                "or use another directory"
            ) from exc
        claimed, recorded = self._load_state() if existed else ([], None)
        try:
            if claimed:
                if self._trusts(recorded, os.fstat(self.fd), len(claimed)):
                    good = claimed  # synced, and nobody wrote the part file since
                    self.trusted = len(good)
                else:
                    good = await self.verify_claimed(claimed)
                for i in good:
                    self.done[i] = 1
                    self.resumed += self.chunk_len(i)
                if good:
                    log.info("resuming %s: %d of %d chunks already verified (%s)",
                             self.final.name, len(good), self.total_chunks,
                             "trusted from the synced state" if self.trusted else "re-hashed")
            else:
                os.ftruncate(self.fd, 0)
            os.ftruncate(self.fd, self.size)
            if self.size and hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(self.fd, 0, self.size)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
            self._pin()
        except OSError as exc:
            if not claimed:
                with contextlib.suppress(OSError):
                    self.part.unlink()
            self.close_part()
            raise destination_error(exc, self.part) from exc
        self.opened = True
        self.done_bytes = self.resumed

    def _verify_and_write(self, index: int, data: bytes | memoryview) -> bool:
        """Hash one chunk and write it if it matches (runs in a thread: both drop the GIL)."""
        if leaf_hash(data) != self.hashes[index]:
            return False
        self._write(index, data)
        return True

    def _write(self, index: int, data: bytes | memoryview) -> None:
        try:
            written = os.pwrite(self.fd, data, index * self.chunk_size)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
            if self.stamp_ns:  # (a kill before this: the rerun re-hashes, see _pin)
                os.utime(self.fd, ns=(self.stamp_ns, self.stamp_ns))
        except OSError as exc:
            raise destination_error(exc, self.part) from exc

    def close_part(self) -> None:
        if not self._finished:
            self._wait_saved()
        if self._saver is not None:
            self._saver.shutdown(wait=not self._finished)
            self._saver = None
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def check_destination(final: Path, file_id: str, size: int, force: bool) -> bool:
    """Create the directory; True if ``final`` already holds this very file.

    Raises DestinationError if a different file is there and ``force`` is off.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if not (final.exists() or final.is_symlink()):
        return False
    if final.is_file() and final.stat().st_size == size and file_id_of(final) == file_id:
        return True
    if final.is_dir():
        raise DestinationError(f"{final} is a directory; cannot replace it")
    if not force:
        raise DestinationError(
            f"{final} already exists with different content; "
            "use --force to replace it or -o to pick another directory"
        )
    return False


def drop_stale_part(directory: Path, file_id: str) -> None:
    """Remove the part and state of a download whose file is already complete here.

    Left by an interrupted run when the file then arrived another way; skipped while
    another ``kadshare get`` holds the part's lock.
    """
    part, state = part_paths(directory, file_id)
    try:
        fd = os.open(part, os.O_RDWR)
    except OSError:
        fd = -1
    try:
        if fd >= 0 and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for path in (part, state):
            with contextlib.suppress(OSError):
                path.unlink()
    except OSError:
        return  # locked: a download of it is running
    finally:
        if fd >= 0:
            os.close(fd)
