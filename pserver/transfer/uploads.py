"""Opt-in uploads: token check, name check, hashed temp file, link into place once verified.

Uploads go to a hidden temporary file inside the share folder, are hashed as they arrive
(off the event loop), and are linked into place under their final name only once the
declared hash matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc

from kadcommon.merkle import ChunkHasher, file_id_of_path
from kadcommon.names import UnsafeName, case_key, check_path
from protos import kadshare_pb2
from pserver.catalog import UPLOAD_TMP_PREFIX, Catalog, SharedFile, normalise_file_id
from pserver.config import NodeConfig
from pserver.errors import InvalidFileId, PeerError, UploadRefused
from pserver.metrics import PeerMetrics
from pserver.transfer.framing import status_for

log = logging.getLogger(__name__)

#: After refusing an upload, bytes and seconds spent reading what the client still sends.
#: 2 s was too short for a client on a loaded machine still sending a 6 MiB file: it then
#: saw "Internal error from Core" instead of the refusal (tests/pclient, under load).
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 10.0


def check_upload_name(name: str) -> tuple[str, ...]:
    """The components of an upload name, else ``UploadRefused``.

    A name is a safe relative path (``kadcommon.names``, the rule of folder manifests):
    ``NAME`` or ``FOLDER/.../NAME`` inside the share folder. A trailing ``/`` (with size
    0) names a folder to create, so a folder's empty sub-folders travel too."""
    path = name[:-1] if name.endswith("/") else name
    try:
        return check_path(path, "upload name")
    except UnsafeName as exc:
        raise UploadRefused(UploadRefused.BAD_NAME, str(exc)) from None


def _refuse_name(message: str) -> UploadRefused:
    return UploadRefused(UploadRefused.BAD_NAME, message)


def make_folders(share: Path, parts: tuple[str, ...],
                 is_private: Callable[[str], bool]) -> list[Path]:
    """Create the folders ``share/parts[0]/...`` (worker thread); the ones created.

    Refused (nothing left behind): a link or a file in the way, the data folder, a name
    that differs only by case from one already there (a twin on a case-insensitive file
    system, and a folder that could no longer be shared as a unit)."""
    created: list[Path] = []
    here = share
    try:
        for part in parts:
            _check_no_case_twin(here, part)
            here = here / part
            if here.is_symlink() or (here.exists() and not here.is_dir()):
                raise _refuse_name(f"{here.relative_to(share)} exists here and is not a folder")
            if not here.exists():
                here.mkdir()
                created.append(here)
            if is_private(os.path.realpath(here)):
                raise _refuse_name(f"{here.relative_to(share)} is this peer's data folder")
    except BaseException:
        remove_folders(created)
        raise
    return created


def _check_no_case_twin(folder: Path, part: str) -> None:
    key = case_key(part)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for other in names:
        if other != part and case_key(other) == key:
            raise _refuse_name(f"{part!r} differs only by case from {other!r}, already in "
                               f"{folder.name or 'the share folder'}")


def remove_folders(created: list[Path]) -> None:
    """Remove the folders an upload created, deepest first, if still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


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


class UploadReceiver:
    """Receives ``Upload`` streams into the catalog's share folder; ``on_upload`` announces
    a verified upload."""

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

    async def handle(
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
        name = header.name
        parts = check_upload_name(name)
        share_dir = self.catalog.share_dir
        assert share_dir is not None
        if name.endswith("/"):
            return await self._make_folder(share_dir, parts, header, stream)
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
        created = await asyncio.to_thread(make_folders, share_dir, parts[:-1],
                                          self.catalog.is_private)
        final = share_dir.joinpath(*parts)
        try:
            if await asyncio.to_thread(_holds, final, file_id, header.size):
                # the very same bytes under the same name: succeed without storing anything
                await self._drain(stream)
                log.info("upload of %s: identical content already here", name)
                return kadshare_pb2.UploadReply(file_id=file_id, name=name, size=header.size)
            await asyncio.to_thread(_check_no_case_twin, final.parent, final.name)
            sink = await self._store(share_dir, final, file_id, header.size, stream)
        except BaseException:
            await asyncio.to_thread(remove_folders, created)
            raise
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

    async def _make_folder(
        self, share_dir: Path, parts: tuple[str, ...], header: kadshare_pb2.UploadHeader,
        stream: AsyncIterator[kadshare_pb2.UploadMessage],
    ) -> kadshare_pb2.UploadReply:
        """A header naming ``FOLDER/`` creates that folder (empty sub-folders of a put)."""
        if header.size or await self._next(stream) is not None:
            raise UploadRefused(UploadRefused.BAD_STREAM,
                                "a folder upload (name ending in '/') carries no bytes")
        await asyncio.to_thread(make_folders, share_dir, parts, self.catalog.is_private)
        log.info("upload created folder %s", header.name)
        return kadshare_pb2.UploadReply(file_id="", name=header.name, size=0)

    async def _store(
        self, share_dir: Path, final: Path, file_id: str, size: int,
        stream: AsyncIterator[kadshare_pb2.UploadMessage],
    ) -> _UploadSink:
        """Receive the bytes into a temp file, check them, link them in at ``final``."""
        self._check_free(final)
        tmp = share_dir / f"{UPLOAD_TMP_PREFIX}{secrets.token_hex(8)}.part"
        sink = await asyncio.to_thread(_UploadSink, tmp)
        try:
            while (message := await self._next(stream)) is not None:
                if message.WhichOneof("kind") != "data":
                    raise UploadRefused(UploadRefused.BAD_STREAM, "a second header in one upload")
                data = message.data
                if sink.written + len(data) > size:
                    raise UploadRefused(
                        UploadRefused.BAD_STREAM, f"more bytes than the declared {size}"
                    )
                await asyncio.to_thread(sink.absorb, data)
                self.metrics.bytes_received.inc(len(data))
            if sink.written != size:
                raise UploadRefused(
                    UploadRefused.BAD_STREAM,
                    f"stream ended after {sink.written} of {size} declared bytes",
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
                raise UploadRefused(UploadRefused.EXISTS,
                                    f"{final.name} already exists here") from exc
        finally:
            sink.close()
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return sink

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
