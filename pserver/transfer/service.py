"""The grpc.aio ``TransferService`` servicer (file metadata, ranged streamed downloads under
slot and rate caps) and the gRPC server start-up with health and reflection."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from kadcommon.merkle import CHUNK_SIZE
from kadcommon.pacing import Pacer
from protos import kadshare_pb2, kadshare_pb2_grpc
from pserver.catalog import Catalog, SharedFile
from pserver.config import NodeConfig
from pserver.errors import FileNotShared, PeerError, RangeError
from pserver.grpcsec import ServerSecurity
from pserver.metrics import PeerMetrics
from pserver.partials import ChunkNotHeld, PartialFile, PartialFiles
from pserver.transfer.framing import SERVICE_NAME, read_chunk_message, status_for
from pserver.transfer.uploads import UploadReceiver

log = logging.getLogger(__name__)

#: What a client refused for want of a download slot is told to wait.
RETRY_AFTER_MS = 1000


class TransferServicer(kadshare_pb2_grpc.TransferServiceServicer):
    """Serves the files of a :class:`Catalog`, and the verified chunks of the downloads in
    progress in ``partials``; ``Upload`` streams go to ``uploads`` (by default a receiver
    that needs a token nobody holds, unless the config opens uploads)."""

    def __init__(
        self,
        catalog: Catalog,
        config: NodeConfig,
        metrics: PeerMetrics,
        uploads: UploadReceiver | None = None,
        partials: PartialFiles | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = config
        self.metrics = metrics
        self.uploads = uploads or UploadReceiver(catalog, config, metrics)
        self.partials = partials
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
        except FileNotShared as exc:
            partial = await self._partial(request.file_id, exc, context)
            log.debug("GetInfo %s (partial)", partial.file_id[:12])
            return kadshare_pb2.FileInfo(
                file_id=partial.file_id, name=partial.name, size=partial.size,
                chunk_size=CHUNK_SIZE, chunk_hashes=partial.leaves, have=partial.have(),
            )
        except PeerError as exc:
            await context.abort(status_for(exc), str(exc))
        log.debug("GetInfo %s", entry.file_id[:12])
        return kadshare_pb2.FileInfo(
            file_id=entry.file_id, name=entry.name, size=entry.size,
            chunk_size=entry.chunk_size, chunk_hashes=list(entry.chunk_hashes),
        )

    async def Have(
        self, request: kadshare_pb2.InfoRequest, context: grpc.aio.ServicerContext
    ) -> kadshare_pb2.HaveReply:
        """Empty for a file shared in full, the bitfield of a download in progress."""
        try:
            self.catalog.get(request.file_id)
        except FileNotShared as exc:
            partial = await self._partial(request.file_id, exc, context)
            return kadshare_pb2.HaveReply(have=partial.have())
        except PeerError as exc:
            await context.abort(status_for(exc), str(exc))
        return kadshare_pb2.HaveReply()

    async def _partial(self, file_id: str, exc: FileNotShared,
                       context: grpc.aio.ServicerContext) -> PartialFile:
        """The download in progress of ``file_id``, else abort with ``exc`` (NOT_FOUND)."""
        partial = self.partials.get(file_id) if self.partials is not None else None
        if partial is None or partial.fd < 0:
            await context.abort(status_for(exc), str(exc))
            raise exc  # abort raised already; this line is for the type checker
        return partial

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
        partial: PartialFile | None = None
        try:
            entry, fd = self.catalog.open_for_serving(request.file_id)
        except FileNotShared as exc:
            partial = await self._partial(request.file_id, exc, context)
            entry, fd = partial, os.dup(partial.fd)  # type: ignore[assignment]  # same fields
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
            if partial is not None:
                partial.check_range(start, end)  # nothing is sent of a range not held
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
                if partial is None and (st.st_mtime_ns != entry.mtime_ns
                                        or st.st_size != entry.size):
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
        except ChunkNotHeld as exc:
            failure = (grpc.StatusCode.FAILED_PRECONDITION, str(exc))
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
    async def Upload(
        self,
        request_iterator: AsyncIterator[kadshare_pb2.UploadMessage],
        context: grpc.aio.ServicerContext,
    ) -> kadshare_pb2.UploadReply:
        return await self.uploads.handle(request_iterator, context)


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
            "Have": grpc.unary_unary_rpc_method_handler(
                servicer.Have,
                request_deserializer=pb.InfoRequest.FromString,
                response_serializer=pb.HaveReply.SerializeToString,
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
