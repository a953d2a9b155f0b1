"""The grpc.aio ``TransferService``: file metadata, ranged streamed downloads, opt-in uploads.

Downloads read with ``pread`` one message at a time and ``yield`` it, so grpc's flow
control paces a slow reader and no file is ever held in memory. Uploads go to a hidden
temporary file inside the share folder, are hashed as they arrive (off the event loop),
and are linked into place under their final name only once the declared hash matched.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from kadcommon.merkle import ChunkHasher, file_id_of_path
from kadcommon.pacing import Pacer
from protos import kadshare_pb2, kadshare_pb2_grpc
from pserver.catalog import UPLOAD_TMP_PREFIX, Catalog, SharedFile, normalise_file_id
from pserver.config import NodeConfig
from pserver.errors import FileNotShared, InvalidFileId, PeerError, RangeError, UploadRefused
from pserver.grpcsec import ServerSecurity
from pserver.metrics import PeerMetrics

log = logging.getLogger(__name__)

SERVICE_NAME = kadshare_pb2.DESCRIPTOR.services_by_name["TransferService"].full_name
MAX_NAME_BYTES = 255
#: After refusing an upload, bytes and seconds spent reading what the client still sends.
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 2.0
#: What a client refused for want of a download slot is told to wait.
RETRY_AFTER_MS = 1000

_UPLOAD_CODES = {
    UploadRefused.NOT_ACCEPTING: grpc.StatusCode.PERMISSION_DENIED,
    UploadRefused.NO_TOKEN: grpc.StatusCode.UNAUTHENTICATED,
    UploadRefused.BAD_TOKEN: grpc.StatusCode.PERMISSION_DENIED,
    UploadRefused.BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UploadRefused.BAD_NAME: grpc.StatusCode.INVALID_ARGUMENT,
    UploadRefused.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UploadRefused.BAD_HASH: grpc.StatusCode.INVALID_ARGUMENT,
    UploadRefused.BAD_STREAM: grpc.StatusCode.INVALID_ARGUMENT,
    UploadRefused.EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    UploadRefused.STALLED: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_for(exc: PeerError) -> grpc.StatusCode:
    """The gRPC status code a peer error maps to (never UNKNOWN)."""
    if isinstance(exc, FileNotShared):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, InvalidFileId):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, RangeError):
        return grpc.StatusCode.OUT_OF_RANGE
    if isinstance(exc, UploadRefused):
        return _UPLOAD_CODES.get(exc.reason, grpc.StatusCode.INVALID_ARGUMENT)
    return grpc.StatusCode.FAILED_PRECONDITION


def check_upload_name(name: str) -> str:
    """Return ``name`` if it is a plain, visible file name; raise ``UploadRefused`` if not."""
    problem = None
    if not name:
        problem = "empty name"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = "name longer than 255 bytes"
    elif "/" in name or "\\" in name or os.sep in name:
        problem = "name contains a path separator"
    elif ".." in name:
        problem = "name contains '..'"
    elif name.startswith("."):
        problem = "hidden names are not accepted"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "name contains control characters"
    elif name != name.strip():
        problem = "name starts or ends with white space"
    if problem:
        raise UploadRefused(UploadRefused.BAD_NAME, f"refused upload name {name[:80]!r}: {problem}")
    return name


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def chunk_header(offset: int, length: int) -> bytes:
    """Protobuf wire bytes of ``Chunk`` up to the payload (offset 0 is omitted, as proto3 does)."""
    head = b"\x08" + _varint(offset) if offset else b""
    return head + b"\x12" + _varint(length)


_NOWAIT_FLAG = getattr(os, "RWF_NOWAIT", 0)
_nowait_works = bool(_NOWAIT_FLAG)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` (worker thread); returns the bytes read (short at EOF)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


async def read_chunk_message(fd: int, offset: int, length: int) -> bytes | None:
    """A serialized ``Chunk{offset, data}`` read straight from the file, or None if short.

    Why not ``kadshare_pb2.Chunk(...).SerializeToString()``: that copies the payload twice
    more (into the message, then out of it); building the two-field wire format around a
    ``preadv`` into one buffer costs a single copy. The bytes are exactly what protobuf
    would produce, so any client decodes them with ``Chunk.FromString``.

    Bytes already in the page cache are read on the loop (``RWF_NOWAIT`` never blocks);
    whatever would wait for the disk is read in a worker thread, so a cold file or a slow
    disk never stalls the loop.
    """
    global _nowait_works
    header = chunk_header(offset, length)
    buf = bytearray(len(header) + length)
    buf[: len(header)] = header
    view = memoryview(buf)[len(header) :]
    got = 0
    if _nowait_works:
        try:
            got = os.preadv(fd, [view], offset, _NOWAIT_FLAG)
        except BlockingIOError:
            got = 0
        except OSError as exc:  # a filesystem or kernel without RWF_NOWAIT
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            _nowait_works = False
            got = 0
    if got < length:
        got += await asyncio.to_thread(_pread_into, fd, view[got:], offset + got)
    if got != length:
        return None
    return bytes(buf)


class _UploadSink:
    """Writes arriving bytes to a temp file and hashes them into chunk leaves (worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = ChunkHasher()
        self.file_id = ""
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    @property
    def written(self) -> int:
        return self.hasher.size

    @property
    def chunk_hashes(self) -> list[bytes]:
        return self.hasher.leaves

    def absorb(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.hasher.update(data)

    def finish(self) -> None:
        self.file_id = self.hasher.finish()
        os.fsync(self._fd)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TransferServicer(kadshare_pb2_grpc.TransferServiceServicer):
    """Serves the files of a :class:`Catalog`; ``on_upload`` announces a verified upload."""

    def __init__(
        self,
        catalog: Catalog,
        config: NodeConfig,
        metrics: PeerMetrics,
        on_upload: Callable[[SharedFile], Awaitable[None]] | None = None,
        token: str = "",
    ) -> None:
        self.catalog = catalog
        self.token = token  # uploads need it unless the config says open_uploads
        self.config = config
        self.metrics = metrics
        self.on_upload = on_upload
        self._upload_slots = asyncio.Semaphore(config.max_concurrent_uploads)
        self._downloads = 0
        self._per_client: dict[str, int] = {}
        #: One bucket for every Download stream: ``--max-upload-rate`` caps the total.
        self.pacer = Pacer(config.max_upload_rate)

    async def GetInfo(
        self, request: kadshare_pb2.InfoRequest, context: grpc.aio.ServicerContext
    ) -> kadshare_pb2.FileInfo:
        try:
            entry, fd = self.catalog.open_for_serving(request.file_id)  # still those bytes?
            os.close(fd)
        except PeerError as exc:
            await context.abort(status_for(exc), str(exc))
        log.debug("GetInfo %s", entry.file_id[:12])
        return kadshare_pb2.FileInfo(
            file_id=entry.file_id, name=entry.name, size=entry.size,
            chunk_size=entry.chunk_size, chunk_hashes=list(entry.chunk_hashes),
        )

    async def Download(
        self, request: kadshare_pb2.DownloadRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Stream the range with ``context.write``; each write may wait for flow control
        (a slow reader paces us) but not longer than ``stall_timeout``."""
        client = _client_host(context.peer())
        per_client = self.config.max_downloads_per_client
        if self._downloads >= self.config.max_concurrent_downloads:
            await self._busy(context, f"this peer is serving {self._downloads} downloads")
        if per_client and self._per_client.get(client, 0) >= per_client:
            await self._busy(context, f"this peer serves at most {per_client} download "
                                      "streams to one client at once")
        try:
            entry, fd = self.catalog.open_for_serving(request.file_id)
        except PeerError as exc:
            await context.abort(status_for(exc), str(exc))
        self._downloads += 1
        self._per_client[client] = self._per_client.get(client, 0) + 1
        gauge = self.metrics.active_transfers.labels("download")
        gauge.inc()
        outcome = "error"
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            start, end = self._range(entry, request.offset, request.length)
            log.debug("Download %s [%d, %d)", entry.file_id[:12], start, end)
            step = self.config.message_size
            stall = self.config.stall_timeout
            served = self.metrics.bytes_served
            pos = start
            while pos < end:
                want = min(step, end - pos)
                message = await read_chunk_message(fd, pos, want)
                if message is None:
                    raise FileNotShared(f"{entry.name} shrank while being served")
                st = os.fstat(fd)  # edited in place mid-stream? stop before sending it
                if st.st_mtime_ns != entry.mtime_ns or st.st_size != entry.size:
                    raise FileNotShared(f"{entry.name} changed on disk while being served")
                await self.pacer.take(want)
                try:
                    await asyncio.wait_for(context.write(message), stall)
                except asyncio.TimeoutError:
                    failure = (grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"reader took no data for {stall:g} s; stream closed")
                    log.info("Download %s: %s", entry.file_id[:12], failure[1])
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # grpc's ExecuteBatchError & co: the client left
                    outcome = "cancelled"  # (cancelled, deadline, reset); nobody to answer
                    log.debug("Download %s: client went away (%s)", entry.file_id[:12],
                              type(exc).__name__)
                    return
                served.inc(want)
                pos += want
            else:
                outcome = "ok"
        except PeerError as exc:
            failure = (status_for(exc), str(exc))
        except asyncio.CancelledError:
            outcome = "cancelled"  # grpc cancels the handler when the client goes away
            raise
        except OSError as exc:
            log.warning("reading %s failed: %s", entry.name, exc)
            failure = (grpc.StatusCode.UNAVAILABLE, f"cannot read {entry.name}")
        except Exception:  # a bug must still end in a status a client understands
            log.exception("Download %s failed", entry.file_id[:12])
            failure = (grpc.StatusCode.INTERNAL, "internal error (see the peer's log)")
        finally:
            os.close(fd)
            self._downloads -= 1
            left = self._per_client.pop(client, 1) - 1
            if left > 0:
                self._per_client[client] = left
            gauge.dec()
            self.metrics.transfers.labels("download", outcome).inc()
        if failure is not None:
            await context.abort(*failure)

    @staticmethod
    async def _busy(context: grpc.aio.ServicerContext, why: str) -> None:
        """Refuse a stream over a slot cap: RESOURCE_EXHAUSTED with a retry hint (also as
        ``retry-after-ms`` trailing metadata, for programs)."""
        context.set_trailing_metadata((("retry-after-ms", str(RETRY_AFTER_MS)),))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{why}; retry in {RETRY_AFTER_MS / 1000:g} s")

    @staticmethod
    def _range(entry: SharedFile, offset: int, length: int) -> tuple[int, int]:
        """[start, end) to send; a length running past the end is cut at the end."""
        if entry.size == 0 and offset == 0:
            return 0, 0
        if offset >= entry.size:
            raise RangeError(f"offset {offset} is at or past the end of a {entry.size}-byte file")
        end = entry.size if length == 0 else min(entry.size, offset + length)
        return offset, end

    def _check_upload_token(self, context: grpc.aio.ServicerContext) -> None:
        """Uploads write into the share folder: only the token holder may, unless open."""
        if self.config.open_uploads:
            return
        given = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, given = value.partition(" ")
                given = given.strip() if scheme.lower() == "bearer" else ""
        if not given:
            raise UploadRefused(
                UploadRefused.NO_TOKEN,
                "uploads to this peer need its token (metadata authorization: Bearer TOKEN)",
            )
        if not self.token or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise UploadRefused(UploadRefused.BAD_TOKEN, "wrong upload token")

    async def Upload(
        self,
        request_iterator: AsyncIterator[kadshare_pb2.UploadMessage],
        context: grpc.aio.ServicerContext,
    ) -> kadshare_pb2.UploadReply:
        gauge = self.metrics.active_transfers.labels("upload")
        try:
            if not self.config.accept_uploads or self.catalog.share_dir is None:
                raise UploadRefused(
                    UploadRefused.NOT_ACCEPTING, "this peer does not accept uploads"
                )
            self._check_upload_token(context)
            if self._upload_slots.locked():
                raise UploadRefused(UploadRefused.BUSY, "too many uploads at once; retry later")
            async with self._upload_slots:
                gauge.inc()
                try:
                    reply = await self._receive(request_iterator)
                finally:
                    gauge.dec()
        except PeerError as exc:
            self.metrics.transfers.labels("upload", "refused").inc()
            log.info("upload refused: %s", exc)
            if not (isinstance(exc, UploadRefused) and exc.reason == UploadRefused.STALLED):
                await self._drain(request_iterator)
            await context.abort(status_for(exc), str(exc))
        except OSError as exc:
            self.metrics.transfers.labels("upload", "error").inc()
            log.warning("upload failed: %s", exc)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"cannot store upload: {exc}")
        except Exception:  # a bug must still end in a status a client understands
            self.metrics.transfers.labels("upload", "error").inc()
            log.exception("upload failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error (see the peer's log)")
        self.metrics.transfers.labels("upload", "ok").inc()
        return reply

    @staticmethod
    async def _drain(messages: AsyncIterator[kadshare_pb2.UploadMessage]) -> None:
        """Read (and drop) what the client is still sending, a little: grpc clients that
        are mid-write when the status arrives may report "Internal error from Core"
        instead of our status. Bounded by ``DRAIN_BYTES`` and ``DRAIN_SECONDS``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        seen = 0
        try:
            while seen < DRAIN_BYTES:
                left = deadline - loop.time()
                if left <= 0:
                    return
                message = await asyncio.wait_for(anext(messages, None), left)
                if message is None:
                    return
                seen += message.ByteSize()
        except (asyncio.TimeoutError, grpc.RpcError, StopAsyncIteration):
            return

    async def _receive(
        self, messages: AsyncIterator[kadshare_pb2.UploadMessage]
    ) -> kadshare_pb2.UploadReply:
        stream = aiter(messages)
        first = await self._next(stream)
        if first is None or first.WhichOneof("kind") != "header":
            raise UploadRefused(
                UploadRefused.BAD_STREAM, "the first upload message must be a header"
            )
        header = first.header
        name = check_upload_name(header.name)
        try:
            file_id = normalise_file_id(header.file_id)
        except InvalidFileId as exc:
            raise UploadRefused(UploadRefused.BAD_HASH, str(exc)) from exc
        if header.size > self.config.max_upload:
            raise UploadRefused(
                UploadRefused.TOO_LARGE,
                f"upload of {header.size} bytes exceeds this peer's limit of "
                f"{self.config.max_upload} bytes",
            )
        share_dir = self.catalog.share_dir
        assert share_dir is not None
        final = share_dir / name
        if await asyncio.to_thread(_holds, final, file_id, header.size):
            # the very same bytes under the same name: succeed without storing anything
            await self._drain(stream)
            log.info("upload of %s: identical content already here", name)
            return kadshare_pb2.UploadReply(file_id=file_id, name=name, size=header.size)
        self._check_free(final)
        tmp = share_dir / f"{UPLOAD_TMP_PREFIX}{secrets.token_hex(8)}.part"
        sink = await asyncio.to_thread(_UploadSink, tmp)
        try:
            while (message := await self._next(stream)) is not None:
                if message.WhichOneof("kind") != "data":
                    raise UploadRefused(UploadRefused.BAD_STREAM, "a second header in one upload")
                data = message.data
                if sink.written + len(data) > header.size:
                    raise UploadRefused(
                        UploadRefused.BAD_STREAM, f"more bytes than the declared {header.size}"
                    )
                await asyncio.to_thread(sink.absorb, data)
                self.metrics.bytes_received.inc(len(data))
            if sink.written != header.size:
                raise UploadRefused(
                    UploadRefused.BAD_STREAM,
                    f"stream ended after {sink.written} of {header.size} declared bytes",
                )
            await asyncio.to_thread(sink.finish)
            actual = sink.file_id
            if actual != file_id:
                raise UploadRefused(
                    UploadRefused.BAD_HASH,
                    f"content hash {actual[:16]}… does not match the declared {file_id[:16]}…",
                )
            self._check_free(final)
            try:
                os.link(tmp, final)  # never replaces an existing file
            except FileExistsError as exc:
                raise UploadRefused(UploadRefused.EXISTS, f"{name} already exists here") from exc
        finally:
            sink.close()
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        await self.catalog.add_verified(final, file_id, sink.chunk_hashes)
        log.info("received upload %s (%d bytes, %s)", name, header.size, file_id[:12])
        if self.on_upload is not None:
            try:
                entry = self.catalog.get(file_id)
            except PeerError:
                entry = None
            if entry is not None:
                await self.on_upload(entry)
        return kadshare_pb2.UploadReply(file_id=file_id, name=name, size=header.size)

    async def _next(
        self, stream: AsyncIterator[kadshare_pb2.UploadMessage]
    ) -> kadshare_pb2.UploadMessage | None:
        """The next upload message, None at the end; refuse a sender that goes quiet."""
        try:
            return await asyncio.wait_for(anext(stream, None), self.config.stall_timeout)
        except asyncio.TimeoutError:
            raise UploadRefused(
                UploadRefused.STALLED,
                f"uploader sent nothing for {self.config.stall_timeout:g} s",
            ) from None

    @staticmethod
    def _check_free(final: Path) -> None:
        if final.exists() or final.is_symlink():
            raise UploadRefused(UploadRefused.EXISTS, f"{final.name} already exists here")


def _holds(path: Path, file_id: str, size: int) -> bool:
    """True if ``path`` is a regular file (not a link) of ``size`` bytes hashing to
    ``file_id``: a re-upload of it is a no-op, not a conflict."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
        actual = file_id_of_path(path)
    except OSError:
        return False
    return actual == file_id


def _client_host(peer: str) -> str:
    """The address part of grpc's ``ipv4:1.2.3.4:5678`` / ``ipv6:[::1]:5678``."""
    host = peer.rpartition(":")[0] if peer.count(":") >= 2 else peer
    return host.partition(":")[2] or host


def transfer_handler(servicer: TransferServicer) -> grpc.GenericRpcHandler:
    """The service's method handlers; ``Download`` yields pre-serialized ``Chunk`` bytes."""
    pb = kadshare_pb2
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "GetInfo": grpc.unary_unary_rpc_method_handler(
                servicer.GetInfo,
                request_deserializer=pb.InfoRequest.FromString,
                response_serializer=pb.FileInfo.SerializeToString,
            ),
            "Download": grpc.unary_stream_rpc_method_handler(
                servicer.Download,
                request_deserializer=pb.DownloadRequest.FromString,
                response_serializer=bytes,
            ),
            "Upload": grpc.stream_unary_rpc_method_handler(
                servicer.Upload,
                request_deserializer=pb.UploadMessage.FromString,
                response_serializer=pb.UploadReply.SerializeToString,
            ),
        },
    )


async def start_grpc_server(
    servicer: TransferServicer, host: str, port: int, security: ServerSecurity | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """Start the grpc.aio server with TransferService, health and reflection; over TLS
    and behind the network gate as ``security`` says (None: plaintext, open)."""
    security = security or ServerSecurity(cert=None)
    server = grpc.aio.server(
        interceptors=security.interceptors(),
        options=[
            # GetInfo of a file over ~120 GiB (34 bytes per 1 MiB chunk) passes 4 MiB;
            # Download messages stay <= 1 MiB whatever this says.
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024 + 1024),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", 128),  # per connection; the rest wait in HTTP/2
        ]
    )
    server.add_generic_rpc_handlers((transfer_handler(servicer),))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = security.add_port(server, address)
    except RuntimeError as exc:  # grpc's way of saying "address in use / not available"
        bound = 0
        cause: Exception | None = exc
    else:
        cause = None
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address} (in use or not available)") from cause
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health
