"""Multi-source, resumable, verified downloads over gRPC (orchestration).

Modules: ``description`` (GetInfo, checked against the Merkle file id), ``scheduler``
(runs, stealing, endgame); gRPC helpers shared with the library live in
``pclient.grpcutil``. Still here, to be split next into their own modules:
the part file and resume state, and the per-source workers.

How a download runs (``download_file``):

1. ``GetInfo`` from the providers that answer first: size, chunk size, one leaf hash per
   chunk. The chunk list is checked against the file id (its Merkle root,
   ``kadcommon.merkle``) before any byte is fetched, so a provider that lies about it is
   dropped at once. Every chunk is checked against its leaf the moment it arrives, so a
   source that sends bad bytes is caught after one chunk.
2. Bytes go to a hidden ``.kadshare-dl-ID.part`` in the destination folder beside a small
   JSON resume state ``.kadshare-dl-ID.part.state`` (which chunks are written and
   verified). Both are named by the file id, not by the saved name, so a rerun finds
   them whichever name or provider it uses; hidden, so a peer sharing that folder never
   announces them. A rerun after Ctrl-C, kill -9 or the loss of every source
   re-verifies the recorded chunks and fetches only the rest.
3. One worker per source (up to ``sources`` at once). Workers take *runs* of
   consecutive chunks (one ``Download`` RPC each) from a shared queue; a worker with
   nothing left to take steals the back half of the largest run still in flight, so
   fast sources end up doing more of the file. A source that errors, stalls longer than
   ``stall_timeout`` or sends a chunk with the wrong hash is dropped for this download;
   its unfinished chunks go back to the queue and a spare provider takes its place.
4. When every chunk is in, the file is complete and verified (no second pass: every
   chunk matched a leaf of the verified tree) and is renamed over the final name. An
   existing different file is never replaced unless ``force``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

try:
    import fcntl
except ImportError:  # not POSIX: downloads work, without the .part lock
    fcntl = None  # type: ignore[assignment]  # no fcntl on this platform: locking is skipped

from kadcommon.fileid import is_file_id
from kadcommon.merkle import file_id_of_path, leaf_hash
from kadcommon.pacing import Pacer
from pclient.download.description import fetch_info, pick_name
from pclient.download.scheduler import _Run, _Scheduler
from pclient.errors import (
    ClientError,
    DestinationError,
    NoProviders,
    TransferFailed,
)
from pclient.grpcutil import Dialer, describe_rpc_error
from protos import kadshare_pb2, kadshare_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_SOURCES = 4
DEFAULT_RUN_BYTES = 8 * 1024 * 1024
DEFAULT_STALL_TIMEOUT = 15.0
DEFAULT_INFO_TIMEOUT = 10.0
DEFAULT_STATE_INTERVAL = 0.5
DEFAULT_ADAPTIVE_BYTES = 64 * 1024 * 1024
REPROBE_WINDOWS = 10  # after a step that did not pay, wait this many windows to retry
MAX_CHUNK_SIZE = 64 * 1024 * 1024  # a chunk is buffered whole before it can be verified
STATE_VERSION = 1
#: Threads that verify (SHA-256 drops the GIL) and write chunks off the event loop: one
#: per core, at least 2 (a write may wait for the disk while another chunk hashes).
IO_THREADS = min(8, max(2, os.cpu_count() or 2))
PART_PREFIX = ".kadshare-dl-"
PART_SUFFIX = ".part"
STATE_SUFFIX = ".part.state"
MAX_NAME_BYTES = 255  # a file name's limit on common file systems (ext4, xfs, btrfs, apfs)
_EXTENSION = re.compile(r"(\.[A-Za-z0-9]{1,10}){1,2}$")  # ".jpg", ".tar.gz": kept whole


@dataclass(frozen=True, kw_only=True)
class DownloadConfig:
    """Tunables of one download; defaults suit a LAN or loopback.

    sources: providers fetched from in parallel.
    run_bytes: bytes asked for in one ``Download`` RPC (rounded to whole chunks).
    stall_timeout: seconds without a message before a source is dropped.
    info_timeout: seconds for ``GetInfo`` per provider.
    state_interval: seconds between resume-state saves while downloading.
    force: replace an existing different file at the destination.
    adaptive_bytes: downloads with at least this many bytes left ramp sources up one at a
        time and keep one more only if it raised the rate by ``adaptive_gain`` (0 = off).
    probe_seconds: length of each ramp-up measurement window.
    max_rate: bytes per second taken from all sources together (0 = no cap); the
        receiver paces itself and gRPC flow control slows the senders.
    """

    sources: int = DEFAULT_SOURCES
    run_bytes: int = DEFAULT_RUN_BYTES
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    info_timeout: float = DEFAULT_INFO_TIMEOUT
    state_interval: float = DEFAULT_STATE_INTERVAL
    force: bool = False
    adaptive_bytes: int = DEFAULT_ADAPTIVE_BYTES
    adaptive_gain: float = 1.1
    probe_seconds: float = 0.5
    max_rate: int = 0

    def __post_init__(self) -> None:
        self.validate()  # a client builds these from flags: refuse a bad one at once

    def validate(self) -> DownloadConfig:
        """Raise ``ValueError`` naming the first bad field; return self."""
        if self.sources < 1:
            raise ValueError("sources must be at least 1")
        if self.run_bytes < 1 or self.stall_timeout <= 0 or self.info_timeout <= 0:
            raise ValueError("run_bytes, stall_timeout and info_timeout must be positive")
        if self.state_interval <= 0 or self.probe_seconds <= 0 or self.adaptive_gain < 1:
            raise ValueError("state_interval and probe_seconds must be positive, "
                             "adaptive_gain at least 1")
        if self.adaptive_bytes < 0 or self.max_rate < 0:
            raise ValueError("adaptive_bytes and max_rate must be >= 0")
        return self

    def with_changes(self, **changes: Any) -> DownloadConfig:
        """Return a validated copy with some fields replaced."""
        return replace(self, **changes)


@dataclass
class DownloadProgress:
    """Snapshot handed to the progress callback after every verified chunk."""

    name: str
    total: int
    done: int
    fetched: int
    resumed: int
    active_sources: int


ProgressCallback = Callable[[DownloadProgress], None]


@dataclass
class DownloadResult:
    """What a finished download did; ``to_json()`` is the ``get --json`` document."""

    file_id: str
    name: str
    path: Path
    size: int
    fetched_bytes: int = 0
    resumed_bytes: int = 0
    already_present: bool = False
    sources: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: Seconds ``max_rate`` held the download back (not in the JSON document).
    throttled_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "file_id": self.file_id,
            "name": self.name,
            "path": str(self.path),
            "size": self.size,
            "fetched_bytes": self.fetched_bytes,
            "resumed_bytes": self.resumed_bytes,
            "already_present": self.already_present,
            "sources": dict(self.sources),
            "dropped": dict(self.dropped),
            "seconds": round(self.seconds, 3),
        }


class _SourceFailed(Exception):
    """A source is unusable for this download; the message is the reason shown."""


def safe_name(name: str, fallback: str) -> str:
    """The last path component of a provider-given name, or ``fallback`` if unusable.

    A name longer than the file system allows is shortened in its stem, so the extension
    (``.bin``, ``.tar.gz``) that tells programs what the file is survives.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or base.startswith(".") or "\x00" in base:
        return fallback
    return _shorten(base, MAX_NAME_BYTES)


def _shorten(base: str, limit: int) -> str:
    """``base`` cut to ``limit`` UTF-8 bytes on a character boundary, extension kept."""
    if len(base.encode("utf-8", "replace")) <= limit:
        return base
    match = _EXTENSION.search(base)
    ext = match.group(0) if match and match.start() > 0 else ""
    stem = base[: len(base) - len(ext)].encode("utf-8", "replace")[: limit - len(ext)]
    return (stem.decode("utf-8", "ignore").rstrip() or "file") + ext


def part_paths(directory: Path, file_id: str) -> tuple[Path, Path]:
    """(part file, resume state) of ``file_id`` in ``directory``: named by id, hidden."""
    base = directory / f"{PART_PREFIX}{file_id.lower()}"
    return base.with_name(base.name + PART_SUFFIX), base.with_name(base.name + STATE_SUFFIX)


def output_path(dest: str | os.PathLike[str], name: str, fallback: str) -> Path:
    """Where ``-o DEST`` saves a file announced as ``name``.

    DEST is a folder (the file goes inside under its name) if it is an existing folder,
    ends with a slash, or does not exist and has no extension; otherwise (an existing
    file, or a new path with an extension such as ``beach.jpg``) it is the file's path.
    """
    text = os.fspath(dest)
    path = Path(text)  # drops a trailing slash, so look at ``text`` for it
    if path.is_dir() or text.endswith(("/", os.sep)):
        return path / safe_name(name, fallback)
    if path.exists() or path.is_symlink() or path.suffix:
        return path
    return path / safe_name(name, fallback)


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


class _Download:
    """State of one download in progress (see the module docstring)."""

    def __init__(
        self,
        file_id: str,
        info: kadshare_pb2.FileInfo,
        final: Path,
        providers: list[str],
        config: DownloadConfig,
        progress: ProgressCallback | None,
        dropped: dict[str, str],
        dialer: Dialer,
    ) -> None:
        self.file_id = file_id
        self.dialer = dialer
        self.info = info
        self.size = info.size
        self.chunk_size = info.chunk_size or 1
        self.hashes = list(info.chunk_hashes)
        self.total_chunks = len(self.hashes)
        self.final = final
        self.part, self.state = part_paths(final.parent, file_id)
        self.providers = providers
        self.config = config
        self.progress = progress
        self.dropped = dropped
        self.done = bytearray(self.total_chunks)
        self.fd = -1
        self.opened = False
        self.fetched = 0
        self.resumed = 0
        self.done_bytes = 0
        self.per_source: dict[str, int] = {}
        self.fetch_seconds: dict[str, float] = {}
        self.live: dict[str, None] = {}  # workers alive, in provider order
        self.slots = config.sources  # workers allowed to fetch at once (ramp-up lowers it)
        self.active = 0
        self._last_save = 0.0
        self.sched: _Scheduler | None = None
        self.pacer = Pacer(config.max_rate)
        self.io_pool = ThreadPoolExecutor(max_workers=IO_THREADS,
                                          thread_name_prefix="kadshare-io")

    def chunk_len(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    # -- resume state ----------------------------------------------------------------
    def _load_state(self) -> list[int]:
        """Chunk indexes the saved state claims done, if it belongs to this file."""
        try:
            raw = json.loads(self.state.read_text())
            if not (
                raw.get("version") == STATE_VERSION
                and raw.get("file_id") == self.file_id
                and raw.get("size") == self.size
                and raw.get("chunk_size") == self.chunk_size
            ):
                return []
            bitmap = bytes.fromhex(raw.get("done", ""))
        except (OSError, ValueError, TypeError, AttributeError):
            return []
        return [i for i in range(self.total_chunks) if i < len(bitmap) and bitmap[i]]

    def _verify_claimed(self, claimed: list[int]) -> list[int]:
        """Re-hash the chunks a state file claims, so a stale state costs nothing."""
        good = []
        with open(self.part, "rb") as fh:
            for i in claimed:
                fh.seek(i * self.chunk_size)
                data = fh.read(self.chunk_len(i))
                if leaf_hash(data) == self.hashes[i]:
                    good.append(i)
        return good

    def save_state(self) -> None:
        if not self.opened:
            return
        doc = {
            "version": STATE_VERSION,
            "file_id": self.file_id,
            "name": self.final.name,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "done": bytes(self.done).hex(),
        }
        tmp = self.state.with_name(self.state.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.state)
        except OSError as exc:
            log.warning("could not save resume state %s: %s", self.state, exc)
        self._last_save = time.monotonic()

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
            self.close()
            raise DestinationError(
                f"another download is already writing {self.part}; wait for it to finish "
                "or use another directory"
            ) from exc
        claimed = self._load_state() if existed else []
        try:
            if claimed:
                good = await asyncio.to_thread(self._verify_claimed, claimed)
                for i in good:
                    self.done[i] = 1
                    self.resumed += self.chunk_len(i)
                if good:
                    log.info("resuming %s: %d of %d chunks already verified",
                             self.final.name, len(good), self.total_chunks)
            else:
                os.ftruncate(self.fd, 0)
            os.ftruncate(self.fd, self.size)
            if self.size and hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(self.fd, 0, self.size)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
        except OSError as exc:
            if not claimed:
                with contextlib.suppress(OSError):
                    self.part.unlink()
            self.close()
            raise destination_error(exc, self.part) from exc
        self.opened = True
        self.done_bytes = self.resumed

    # -- transfer --------------------------------------------------------------------
    def _verify_and_write(self, index: int, data: bytes) -> bool:
        """Hash one chunk and write it if it matches (runs in a thread: both drop the GIL)."""
        if leaf_hash(data) != self.hashes[index]:
            return False
        self._write(index, data)
        return True

    def _write(self, index: int, data: bytes) -> None:
        try:
            written = os.pwrite(self.fd, data, index * self.chunk_size)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            raise destination_error(exc, self.part) from exc

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(
                DownloadProgress(
                    name=self.final.name,
                    total=self.size,
                    done=self.done_bytes,
                    fetched=self.fetched,
                    resumed=self.resumed,
                    active_sources=self.active,
                )
            )

    async def _accept(self, run: _Run, data: bytes) -> None:
        """Verify and store the next chunk of ``run``; a bad hash drops the source."""
        assert self.sched is not None
        index = run.next
        await self.pacer.take(len(data))
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self.io_pool, self._verify_and_write, index, data):
            raise _SourceFailed(f"sent a corrupted chunk (#{index}, hash mismatch)")
        run.next += 1
        if self.done[index]:
            return
        size = len(data)
        self.sched.chunk_done(index)
        self.fetched += size
        self.done_bytes += size
        self.per_source[run.source] = self.per_source.get(run.source, 0) + size
        if time.monotonic() - self._last_save >= self.config.state_interval:
            self.save_state()
        self._report()

    async def _fetch_run(self, stub: kadshare_pb2_grpc.TransferServiceStub, run: _Run) -> None:
        offset = run.next * self.chunk_size
        length = min(run.end * self.chunk_size, self.size) - offset
        call = stub.Download(
            kadshare_pb2.DownloadRequest(file_id=self.file_id, offset=offset, length=length)
        )
        buf = bytearray()
        expected = offset
        stream = call.__aiter__()
        try:
            while run.next < run.end:
                try:
                    msg = await asyncio.wait_for(
                        stream.__anext__(), timeout=self.config.stall_timeout
                    )
                except StopAsyncIteration:
                    raise _SourceFailed(f"stream ended early at byte {expected}") from None
                except TimeoutError:
                    raise _SourceFailed(
                        f"stalled: no data for {self.config.stall_timeout:g} s"
                    ) from None
                if msg.offset != expected or not msg.data:
                    raise _SourceFailed(f"sent bytes at offset {msg.offset}, wanted {expected}")
                data: bytes = msg.data
                expected += len(data)
                if not buf and len(data) == self.chunk_len(run.next):
                    await self._accept(run, data)  # aligned message: no copy
                    continue
                buf += data
                while run.next < run.end:
                    need = self.chunk_len(run.next)
                    if len(buf) < need:
                        break
                    chunk = bytes(buf[:need])
                    del buf[:need]
                    await self._accept(run, chunk)
        except grpc.aio.AioRpcError as exc:
            raise _SourceFailed(describe_rpc_error(exc)) from exc
        finally:
            call.cancel()

    def _rate(self, address: str) -> float:
        spent = self.fetch_seconds.get(address, 0.0)
        return self.per_source.get(address, 0) / spent if spent > 0 else -1.0

    def _may_fetch(self, address: str) -> bool:
        """Only the ``slots`` fastest live sources fetch; untried ones queue behind them."""
        if self.slots >= len(self.live):
            return True
        ranked = sorted(self.live, key=lambda a: -self._rate(a))  # stable: provider order
        return address in ranked[: self.slots]

    async def _worker(self, address: str) -> None:
        """Fetch runs from one source until the file is complete or the source fails."""
        assert self.sched is not None
        sched = self.sched
        channel, why = await self.dialer.try_open(address)
        if channel is None:  # a spare that cannot prove its identity, or is gone
            self.dropped[address] = why
            log.info("dropped source %s: %s", address, why)
            sched.notify()
            return
        stub = kadshare_pb2_grpc.TransferServiceStub(channel)
        self.live[address] = None
        fetched_before = False
        try:
            while not sched.complete:
                if not self._may_fetch(address):
                    if fetched_before:  # hand the slot over: wake whoever may use it
                        fetched_before = False
                        sched.notify()
                    await sched.wait_change()
                    continue
                run = sched.take(address)
                if run is None:
                    await sched.wait_change()
                    continue
                fetched_before = True
                self.active += 1
                started = time.monotonic()
                try:
                    await self._fetch_run(stub, run)
                finally:
                    self.active -= 1
                    self.fetch_seconds[address] = (
                        self.fetch_seconds.get(address, 0.0) + time.monotonic() - started
                    )
                    sched.finish(run)
        except _SourceFailed as exc:
            self.dropped[address] = str(exc)
            log.info("dropped source %s: %s", address, exc)
            self._report()
        finally:
            self.live.pop(address, None)
            sched.notify()
            await channel.close(grace=None)

    async def _ramp_up(self) -> None:
        """Add sources (doubling) while each step still raises the total rate.

        On a machine where CPU, not the peers, is the limit (loopback, small boxes), more
        parallel streams only add contention; on a real network each added peer adds its
        uplink. Measuring tells the two apart. A step that did not pay is undone and tried
        again later (rates are noisy and peers change), so a download is not stuck on
        fewer sources than help.
        """
        assert self.sched is not None
        self.slots = 1
        prev = await self._measure()
        while True:
            most = min(self.config.sources, len(self.live))
            if self.slots >= most:
                await asyncio.sleep(self.config.probe_seconds * REPROBE_WINDOWS)
                prev = await self._measure()
                continue
            before = self.slots
            self.slots = min(most, self.slots * 2)
            self.sched.notify()
            rate = await self._measure()
            if rate >= prev * self.config.adaptive_gain:
                prev = rate
                continue
            self.slots = before
            self.sched.notify()
            log.info("ramp-up: staying at %d source(s) (%.0f MB/s; %d gave %.0f MB/s)",
                     before, prev / 1e6, self.slots, rate / 1e6)
            await asyncio.sleep(self.config.probe_seconds * REPROBE_WINDOWS)
            prev = await self._measure()

    async def _measure(self) -> float:
        start, fetched = time.monotonic(), self.fetched
        await asyncio.sleep(self.config.probe_seconds)
        return (self.fetched - fetched) / max(1e-6, time.monotonic() - start)

    async def run(self) -> None:
        """Fetch every missing chunk, replacing dropped sources with spare providers."""
        run_chunks = max(1, self.config.run_bytes // self.chunk_size)
        missing = self.total_chunks - sum(self.done)
        per_source = -(-missing // max(1, min(self.config.sources, len(self.providers))))
        self.sched = _Scheduler(self.total_chunks, self.done, min(run_chunks, max(1, per_source)))
        spare = [p for p in self.providers if p not in self.dropped]
        tasks: set[asyncio.Task[None]] = set()
        tuner: asyncio.Task[None] | None = None
        missing_bytes = self.size - self.resumed
        if (0 < self.config.adaptive_bytes <= missing_bytes and self.config.sources > 1
                and len(spare) > 1):
            self.slots = 1
            tuner = asyncio.create_task(self._ramp_up())
        self._report()
        try:
            while not self.sched.complete:
                while spare and len(tasks) < self.config.sources:
                    tasks.add(asyncio.create_task(self._worker(spare.pop(0))))
                if not tasks:
                    break
                finished, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # re-raise DestinationError and bugs
        finally:
            if tuner is not None:
                tuner.cancel()
                tasks.add(tuner)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if not self.sched.complete:
            raise TransferFailed(
                f"every provider failed; {self.done_bytes} of {self.size} bytes saved, "
                "rerun to resume",
                self.dropped,
            )

    def close(self) -> None:
        self.io_pool.shutdown(wait=True, cancel_futures=True)
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _check_destination(final: Path, file_id: str, size: int, force: bool) -> bool:
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


def _drop_stale_part(directory: Path, file_id: str) -> None:
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


async def download_file(
    file_id: str,
    dest: str | os.PathLike[str],
    providers: list[str],
    *,
    config: DownloadConfig | None = None,
    progress: ProgressCallback | None = None,
    name: str | None = None,
    dialer: Dialer | None = None,
) -> DownloadResult:
    """Download ``file_id`` from ``providers`` (gRPC ``host:port``) to ``dest``.

    ``dest`` is a folder or the file's path (see ``output_path``). The file is saved as
    ``name`` if given, else under the name most of the providers asked describe it by.
    ``dialer`` proves each provider's identity when first used and opens its channels
    (default: TLS, any node identity, the public network).

    Raises NoProviders, TransferFailed or DestinationError.
    """
    config = config or DownloadConfig()
    file_id = file_id.lower()
    started = time.monotonic()
    providers = list(dict.fromkeys(p for p in providers if p))
    if not providers:
        raise NoProviders(f"no provider is sharing {file_id[:16]}… right now")
    dialer = dialer or Dialer()
    info, _first, dropped = await fetch_info(file_id, providers, config.info_timeout, dialer)
    providers = [p for p in providers if p not in dropped]
    final = output_path(dest, name or info.name, file_id[:16])
    result = DownloadResult(file_id=file_id, name=final.name, path=final, size=info.size)
    try:
        present = await asyncio.to_thread(_check_destination, final, file_id, info.size,
                                          config.force)
    except OSError as exc:
        raise destination_error(exc, final) from exc
    if present:
        await asyncio.to_thread(_drop_stale_part, final.parent, file_id)
        result.already_present = True
        result.seconds = time.monotonic() - started
        return result

    job = _Download(file_id, info, final, providers, config, progress, dropped, dialer)
    finished = False
    try:
        await job.open_part()
        if job.total_chunks:
            await job.run()
        # No second pass: the leaves were checked against the id, each chunk against
        # its leaf, so a complete part file is the file.
        try:
            os.replace(job.part, final)  # still locked: nobody else can start on .part now
        except OSError as exc:
            raise destination_error(exc, final) from exc
        finished = True
        with contextlib.suppress(OSError):
            job.state.unlink()
    finally:
        if not finished:
            job.save_state()
        job.close()
    result.fetched_bytes = job.fetched
    result.resumed_bytes = job.resumed
    result.sources = dict(job.per_source)
    result.dropped = dict(job.dropped)
    result.seconds = time.monotonic() - started
    result.throttled_seconds = job.pacer.waited
    log.info("saved %s (%d bytes, %d fetched) from %d sources",
             final, info.size, job.fetched, len(job.per_source))
    return result


__all__ = [
    "ClientError",
    "DownloadConfig",
    "DownloadProgress",
    "DownloadResult",
    "ProgressCallback",
    "download_file",
    "fetch_info",
    "is_file_id",
    "output_path",
    "part_paths",
    "pick_name",
    "safe_name",
]
