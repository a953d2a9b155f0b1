"""Multi-source, resumable, verified downloads over gRPC (orchestration).

Modules: ``description`` (GetInfo, checked against the Merkle file id), ``scheduler``
(runs, stealing, endgame), ``partfile`` (the part file and its resume state),
``sources`` (per-source workers, ramp-up); gRPC helpers shared with the library live in
``pclient.grpcutil``. This module holds the configuration, the result and the
orchestration (``download_file``).

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
   announces them. A rerun after Ctrl-C, kill -9 or the loss of every source takes
   the recorded chunks (without re-hashing them if the state was saved after a sync of
   an untouched part file, see partfile.py) and fetches only the rest.
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
import logging
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kadcommon import bitfield
from kadcommon.fileid import is_file_id
from pclient.download.description import fetch_info, pick_name
from pclient.download.partfile import (
    check_destination,
    destination_error,
    drop_stale_part,
    part_paths,
)
from pclient.download.scheduler import _Scheduler
from pclient.download.sources import DownloadProgress, ProgressCallback, SourceWorkers
from pclient.download.swarm import (
    REPORT_INTERVAL,
    RUN_CHUNKS,
    SOURCES_INTERVAL,
    NodeSwarm,
    Swarm,
)
from pclient.errors import ClientError, NoProviders, TransferFailed
from pclient.grpcutil import Dialer

log = logging.getLogger(__name__)

DEFAULT_SOURCES = 4
DEFAULT_RUN_BYTES = 8 * 1024 * 1024
DEFAULT_STALL_TIMEOUT = 15.0
DEFAULT_INFO_TIMEOUT = 10.0
DEFAULT_STATE_INTERVAL = 0.5
DEFAULT_ADAPTIVE_BYTES = 64 * 1024 * 1024
#: One stream per source: on loopback (2 cores, CPU-bound) a second one showed no gain
#: that held across runs (README, "Transfers"); more may pay on long fat links.
DEFAULT_STREAMS_PER_SOURCE = 1
MAX_STREAMS_PER_SOURCE = 8
MAX_CHUNK_SIZE = 64 * 1024 * 1024  # a chunk is buffered whole before it can be verified
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
    streams_per_source: concurrent ``Download`` streams (each its own run of chunks) on
        one source's channel; a source that refuses an extra one for want of a slot
        (RESOURCE_EXHAUSTED) keeps the others.
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
    streams_per_source: int = DEFAULT_STREAMS_PER_SOURCE

    def __post_init__(self) -> None:
        self.validate()  # a client builds these from flags: refuse a bad one at once

    def validate(self) -> DownloadConfig:
        """Raise ``ValueError`` naming the first bad field; return self."""
        if self.sources < 1:
            raise ValueError("sources must be at least 1")
        if not 1 <= self.streams_per_source <= MAX_STREAMS_PER_SOURCE:
            raise ValueError(f"streams_per_source must be 1..{MAX_STREAMS_PER_SOURCE}")
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


class _Download(SourceWorkers):
    """One download in progress (see the module docstring)."""

    swarm: Swarm | None = None

    async def run(self) -> None:
        """Fetch every missing chunk, replacing dropped sources with spare providers
        (and, in a swarm, adding partial providers as they appear)."""
        run_chunks = max(1, self.config.run_bytes // self.chunk_size)
        if self.swarm is not None:
            run_chunks = min(run_chunks, RUN_CHUNKS)
        missing = self.total_chunks - sum(self.done)
        streams = max(1, min(self.config.sources, len(self.providers)))
        per_source = -(-missing // (streams * self.config.streams_per_source))
        # In a swarm, downloaders choose among equally rare chunks at random (scheduler.py)
        self.sched = _Scheduler(self.total_chunks, self.done, min(run_chunks, max(1, per_source)),
                                spread=self.swarm is not None,
                                me=self.swarm.me if self.swarm is not None else "")
        self.spare = [p for p in self.providers if p not in self.dropped]
        tasks: set[asyncio.Task[None]] = set()
        helpers: list[asyncio.Task[None]] = []
        missing_bytes = self.size - self.resumed
        if (0 < self.config.adaptive_bytes <= missing_bytes and self.config.sources > 1
                and len(self.spare) > 1 and self.swarm is None):
            # (a swarm's sources come and go: rates of two steps do not compare)
            self.slots = 1
            helpers.append(asyncio.create_task(self._ramp_up()))
        if self.swarm is not None:
            helpers.append(asyncio.create_task(self._swarm_loop(self.swarm)))
        self._report()
        try:
            while not self.sched.complete:
                while self.spare and len(tasks) < self.config.sources:
                    tasks.add(asyncio.create_task(self._worker(self.spare.pop(0))))
                if not tasks:
                    break
                finished, tasks = await asyncio.wait(
                    tasks, timeout=REPORT_INTERVAL if self.swarm else None,
                    return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # re-raise DestinationError and bugs
        finally:
            tasks.update(helpers)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if not self.sched.complete:
            raise TransferFailed(
                f"every provider failed; {self.done_bytes} of {self.size} bytes saved, "
                "rerun to resume",
                self.dropped,
            )

    async def _swarm_loop(self, swarm: Swarm) -> None:
        """Lend the part file to the node, report progress, pick up new sources."""
        leaves = self.part.with_name(self.part.name + ".leaves")
        await asyncio.to_thread(leaves.write_bytes, b"".join(self.hashes))
        await swarm.lend(self.part, leaves, self.info)
        reported = b""
        next_lookup = time.monotonic()
        while True:
            have = bitfield.pack(self.done)
            if have != reported:
                await swarm.report(have)
                reported = have
            if time.monotonic() >= next_lookup:
                for address, node_id in (await swarm.sources()).items():
                    if address not in self.providers:
                        if node_id:
                            self.dialer.expected[address] = node_id
                        self.providers.append(address)
                        self.spare.append(address)
                        log.debug("swarm: new source %s", address)
                next_lookup = time.monotonic() + SOURCES_INTERVAL
            await asyncio.sleep(REPORT_INTERVAL)

    def finish_part(self) -> None:
        self.io_pool.shutdown(wait=True)  # no write in flight re-pins the mtime after this
        super().finish_part()

    def close(self) -> None:
        self.io_pool.shutdown(wait=True, cancel_futures=True)
        self.close_part()


async def download_file(
    file_id: str,
    dest: str | os.PathLike[str],
    providers: list[str],
    *,
    config: DownloadConfig | None = None,
    progress: ProgressCallback | None = None,
    name: str | None = None,
    dialer: Dialer | None = None,
    swarm: Swarm | None = None,
) -> DownloadResult:
    """Download ``file_id`` from ``providers`` (gRPC ``host:port``) to ``dest``.

    ``dest`` is a folder or the file's path (see ``output_path``). The file is saved as
    ``name`` if given, else under the name most of the providers asked describe it by.
    ``dialer`` proves each provider's identity when first used and opens its channels
    (default: TLS, any node identity, the public network). ``swarm`` lends the part
    file to a node while it downloads and adds partial providers as sources
    (``NodeSwarm``; ``Client.download`` sets it up when the client has the node's token).

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
        present = await asyncio.to_thread(check_destination, final, file_id, info.size,
                                          config.force)
    except OSError as exc:
        raise destination_error(exc, final) from exc
    if present:
        await asyncio.to_thread(drop_stale_part, final.parent, file_id)
        result.already_present = True
        result.seconds = time.monotonic() - started
        return result

    job = _Download(file_id, info, final, providers, config, progress, dropped, dialer)
    job.swarm = swarm
    finished = False
    try:
        await job.open_part()
        if job.total_chunks:
            await job.run()
        await asyncio.to_thread(job.finish_part)
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
            job.save_state(final=True)
        if swarm is not None:
            await swarm.end()
            with contextlib.suppress(OSError):
                job.part.with_name(job.part.name + ".leaves").unlink()
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
    "NodeSwarm",
    "ProgressCallback",
    "download_file",
    "fetch_info",
    "is_file_id",
    "output_path",
    "part_paths",
    "pick_name",
    "safe_name",
    "Swarm",
]
