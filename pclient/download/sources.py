"""Per-source workers of a download: ranged ``Download`` streams, verification of each
chunk on arrival, dropping a bad source, and the ramp-up that picks how many fetch.

One worker per source (up to ``sources`` at once). Workers take *runs* of consecutive
chunks (one ``Download`` RPC each) from the scheduler; a source that errors, stalls
longer than ``stall_timeout`` or sends a chunk with the wrong hash is dropped for this
download and its unfinished chunks go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from kadcommon import bitfield
from kadcommon.pacing import Pacer
from pclient.download.partfile import PartFile
from pclient.download.scheduler import _Run, _Scheduler
from pclient.download.wire import DOWNLOAD_METHOD, WireError, decode_chunk
from pclient.grpcutil import Dialer, describe_rpc_error
from protos import kadshare_pb2, kadshare_pb2_grpc

if TYPE_CHECKING:
    from pclient.download import DownloadConfig

log = logging.getLogger(__name__)

REPROBE_WINDOWS = 10  # after a step that did not pay, wait this many windows to retry
HAVE_INTERVAL = 0.5  # seconds between Have polls of a partial source
#: Threads that verify (SHA-256 drops the GIL) and write chunks off the event loop: one
#: per core, at least 2 (a write may wait for the disk while another chunk hashes).
IO_THREADS = min(8, max(2, os.cpu_count() or 2))
#: Chunks of one stream verified and written at once while the next ones arrive, so the
#: receiving loop never waits for a hash (each holds one chunk in memory).
PIPELINE = 4


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


class _SourceFailed(Exception):
    """A source is unusable for this download; the message is the reason shown."""


class _Busy(Exception):
    """A source refused a stream for want of a slot (RESOURCE_EXHAUSTED) before sending
    anything: fatal for its first stream, not for an extra one."""


class _NotHeld(Exception):
    """A partial source refused a run it no longer (or not yet) holds: ask Have again."""


class SourceWorkers(PartFile):
    """A part file filled by one worker per source."""

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
        super().__init__(file_id, info, final)
        self.dialer = dialer
        self.providers = providers
        self.config = config
        self.progress = progress
        self.dropped = dropped
        self.fetched = 0
        self.per_source: dict[str, int] = {}
        self.fetch_seconds: dict[str, float] = {}
        self.live: dict[str, None] = {}  # workers alive, in provider order
        self.slots = config.sources  # workers allowed to fetch at once (ramp-up lowers it)
        self.active = 0  # sources with a stream fetching now
        self._streams: dict[str, int] = {}  # source -> its streams fetching now
        self._loops: dict[str, int] = {}  # source -> its stream loops still running
        self.sched: _Scheduler | None = None
        self.pacer = Pacer(config.max_rate)
        self.io_pool = ThreadPoolExecutor(max_workers=IO_THREADS,
                                          thread_name_prefix="kadshare-io")

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

    def _submit(self, index: int, data: bytes | memoryview) -> asyncio.Future[bool]:
        """Verify and write chunk ``index`` on the I/O pool; the future says if it matched."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self.io_pool, self._verify_and_write, index, data)

    async def _accepted(self, run: _Run, index: int, size: int,
                        check: asyncio.Future[bool]) -> None:
        """Count chunk ``index`` of ``run`` once its check is done; a bad hash drops the
        source."""
        assert self.sched is not None
        if not await check:
            raise _SourceFailed(f"sent a corrupted chunk (#{index}, hash mismatch)")
        run.next = max(run.next, index + 1)
        if self.done[index]:
            return
        self.sched.chunk_done(index)
        self.fetched += size
        self.done_bytes += size
        self.per_source[run.source] = self.per_source.get(run.source, 0) + size
        if time.monotonic() - self._last_save >= self.config.state_interval:
            self.save_state()
        self._report()

    async def _fetch_run(self, channel: grpc.aio.Channel, run: _Run) -> None:
        """One ``Download`` stream for ``run``: payloads are read as views of grpc's raw
        message bytes (wire.py) and up to ``PIPELINE`` chunks at a time are verified and
        written on the I/O pool while the next ones arrive; they are counted in order."""
        offset = run.next * self.chunk_size
        length = min(run.end * self.chunk_size, self.size) - offset
        method = channel.unary_stream(
            DOWNLOAD_METHOD,
            request_serializer=kadshare_pb2.DownloadRequest.SerializeToString,
            response_deserializer=None,  # raw bytes: decoded without copying the payload
        )
        call = method(
            kadshare_pb2.DownloadRequest(file_id=self.file_id, offset=offset, length=length)
        )
        buf = bytearray()
        expected = offset
        index = run.next  # the next chunk to hand to the pool
        checks: deque[tuple[int, int, asyncio.Future[bool]]] = deque()
        stream = call.__aiter__()
        try:
            while index < run.end:  # (stealing may lower ``end`` meanwhile)
                try:
                    raw = await asyncio.wait_for(
                        stream.__anext__(), timeout=self.config.stall_timeout
                    )
                except StopAsyncIteration:
                    raise _SourceFailed(f"stream ended early at byte {expected}") from None
                except TimeoutError:
                    raise _SourceFailed(
                        f"stalled: no data for {self.config.stall_timeout:g} s"
                    ) from None
                try:
                    at, data = decode_chunk(raw)
                except WireError as exc:
                    raise _SourceFailed(f"sent a malformed message: {exc}") from None
                if at != expected or not data:
                    raise _SourceFailed(f"sent bytes at offset {at}, wanted {expected}")
                expected += len(data)
                pieces: list[bytes | memoryview] = []
                if not buf and len(data) == self.chunk_len(index):
                    pieces.append(data)  # aligned message: no copy
                else:
                    buf += data
                    while index + len(pieces) < run.end:
                        need = self.chunk_len(index + len(pieces))
                        if len(buf) < need:
                            break
                        pieces.append(bytes(buf[:need]))
                        del buf[:need]
                for piece in pieces:
                    await self.pacer.take(len(piece))
                    checks.append((index, len(piece), self._submit(index, piece)))
                    index += 1
                while len(checks) >= PIPELINE:
                    await self._accepted(run, *checks.popleft())
            while checks:
                await self._accepted(run, *checks.popleft())
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise _NotHeld(exc.details() or "") from exc
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not checks and (
                    index == offset // self.chunk_size):
                raise _Busy(describe_rpc_error(exc)) from exc  # refused before any byte
            raise _SourceFailed(describe_rpc_error(exc)) from exc
        finally:
            call.cancel()
            for _index, _size, check in checks:  # bytes handed over are verified anyway
                with contextlib.suppress(Exception):
                    await asyncio.shield(check)

    async def _ask_have(self, stub: kadshare_pb2_grpc.TransferServiceStub, address: str
                        ) -> None:
        """Learn which chunks ``address`` holds (empty answer: all of them)."""
        assert self.sched is not None
        try:
            reply = await stub.Have(kadshare_pb2.InfoRequest(file_id=self.file_id),
                                    timeout=self.config.info_timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # a peer from before swarming
                self.sched.set_have(address, None)
                return
            raise _SourceFailed(describe_rpc_error(exc)) from exc
        if not reply.have:
            self.sched.set_have(address, None)
            return
        member = self.dialer.expected.get(address) or self.dialer.node_id(address) or address
        try:
            self.sched.set_have(address, bitfield.unpack(reply.have, self.total_chunks), member)
        except ValueError as exc:
            raise _SourceFailed(f"sent a malformed Have bitfield: {exc}") from None

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
        """Fetch runs from one source, on ``streams_per_source`` concurrent ``Download``
        streams over one channel, until the file is complete or the source fails."""
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
        self._streams[address] = 0
        loops: list[asyncio.Task[None]] = []
        try:
            await self._ask_have(stub, address)
            self._loops[address] = self.config.streams_per_source
            loops = [asyncio.create_task(self._stream_loop(address, channel, stub))
                     for _ in range(self.config.streams_per_source)]
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # _SourceFailed of any stream drops the source
            await asyncio.gather(*loops)
        except _SourceFailed as exc:
            self.dropped[address] = str(exc)
            log.info("dropped source %s: %s", address, exc)
            self._report()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            self.live.pop(address, None)
            self._streams.pop(address, None)
            self._loops.pop(address, None)
            sched.forget(address)
            sched.notify()
            await channel.close(grace=None)

    async def _stream_loop(self, address: str, channel: grpc.aio.Channel,
                           stub: kadshare_pb2_grpc.TransferServiceStub) -> None:
        """One stream's loop: take a run, fetch it, repeat. A stream the source refuses
        for want of a slot (RESOURCE_EXHAUSTED) ends quietly while another stream of
        that source goes on; the last one refused drops the source, as a single stream
        always did."""
        assert self.sched is not None
        sched = self.sched
        fetched_before = False
        asked = time.monotonic()
        while not sched.complete:
            if not self._may_fetch(address):
                if fetched_before:  # hand the slot over: wake whoever may use it
                    fetched_before = False
                    sched.notify()
                await sched.wait_change()
                continue
            partial = address in sched.have
            if partial and time.monotonic() - asked >= HAVE_INTERVAL:
                await self._ask_have(stub, address)  # it gets more as it downloads
                asked = time.monotonic()
            run = sched.take(address)
            if run is None and partial:
                await sched.wait_change(HAVE_INTERVAL)
                continue
            if run is None:  # (in a swarm: look again, see availability.py's grace)
                await sched.wait_change(HAVE_INTERVAL if sched.avail.spread else None)
                continue
            fetched_before = True
            self._streams[address] = self._streams.get(address, 0) + 1
            self.active = sum(1 for n in self._streams.values() if n)
            started = time.monotonic()
            try:
                await self._fetch_run(channel, run)
            except _NotHeld as exc:
                log.debug("source %s: %s", address, exc)
                await self._ask_have(stub, address)
                asked = time.monotonic()
            except _Busy as exc:
                if self._loops.get(address, 0) <= 1:
                    raise _SourceFailed(str(exc)) from None
                self._loops[address] -= 1
                log.debug("source %s refused an extra stream: %s", address, exc)
                return
            finally:
                if address in self._streams:
                    self._streams[address] -= 1
                self.active = sum(1 for n in self._streams.values() if n)
                self.fetch_seconds[address] = (
                    self.fetch_seconds.get(address, 0.0) + time.monotonic() - started
                )
                sched.finish(run)

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
