"""TransferService over a real grpc.aio server on 127.0.0.1 port 0 (no DHT needed)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dht.identity import Identity
from kadcommon.merkle import leaf_hash
from protos import kadshare_pb2, kadshare_pb2_grpc
from pserver.catalog import Catalog, SharedFile
from pserver.config import NodeConfig
from pserver.grpcsec import ServerSecurity
from pserver.metrics import PeerMetrics
from pserver.transfer import SERVICE_NAME, TransferServicer, UploadReceiver, start_grpc_server
from tests.pserver.helpers import (
    RPC_TIMEOUT,
    TEST_TOKEN,
    channel,
    content,
    download,
    sha,
    upload,
)

MiB = 1024 * 1024
BIG = content(3 * MiB + 12345, seed=1)


AUTH = (("authorization", f"Bearer {TEST_TOKEN}"),)


class Peer:
    """A catalog + servicer + grpc server, and a stub talking to it."""

    def __init__(self, tmp: Path, **options: object) -> None:
        self.share = tmp / "share"
        self.data = tmp / "data"
        self.share.mkdir(exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.config = NodeConfig(data_dir=self.data, share_dir=self.share, **options)
        self.uploaded: list[SharedFile] = []

    async def start(self) -> Peer:
        self.catalog = Catalog(self.share, self.data, self.config.chunk_size)
        self.catalog.load()
        await self.catalog.scan()
        self.metrics = PeerMetrics()

        async def on_upload(entry: SharedFile) -> None:
            self.uploaded.append(entry)

        uploads = UploadReceiver(
            self.catalog, self.config, self.metrics, on_upload, token=TEST_TOKEN
        )
        servicer = TransferServicer(self.catalog, self.config, self.metrics, uploads)
        self.servicer = servicer
        ident = Identity.generate()
        security = ServerSecurity.create(ident.public_key, ident.sign, ident.node_id_hex)
        self.server, port, _ = await start_grpc_server(servicer, "127.0.0.1", 0, security)
        self.channel = channel(f"127.0.0.1:{port}")
        self.stub = kadshare_pb2_grpc.TransferServiceStub(self.channel)
        return self

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(None)


@pytest.fixture
async def peer(tmp_path: Path):
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "big.bin").write_bytes(BIG)
    (tmp_path / "share" / "empty.txt").write_bytes(b"")
    (tmp_path / "share" / "sub").mkdir()
    (tmp_path / "share" / "sub" / "small.txt").write_bytes(b"hello kadshare\n")
    p = await Peer(tmp_path).start()
    yield p
    await p.close()


@pytest.fixture
async def uploader(tmp_path: Path):
    p = await Peer(tmp_path, accept_uploads=True, max_upload=2 * MiB).start()
    yield p
    await p.close()


class _Code:
    """A status code that shows the server's details when a comparison fails."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.code, self.details = error.code(), error.details()

    def __eq__(self, other: object) -> bool:
        return self.code == other

    def __repr__(self) -> str:
        return f"{self.code} ({self.details!r})"


async def code_of(coro) -> _Code:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return _Code(info.value)


class TestInfo:
    async def test_chunk_hashes_verify_every_chunk(self, peer: Peer) -> None:
        info = await peer.stub.GetInfo(
            kadshare_pb2.InfoRequest(file_id=sha(BIG)), timeout=RPC_TIMEOUT
        )
        assert (info.size, info.chunk_size, info.name) == (len(BIG), MiB, "big.bin")
        pieces = [BIG[i : i + MiB] for i in range(0, len(BIG), MiB)]
        assert list(info.chunk_hashes) == [leaf_hash(p) for p in pieces]

    async def test_subfolder_file_is_named_by_relative_path(self, peer: Peer) -> None:
        info = await peer.stub.GetInfo(
            kadshare_pb2.InfoRequest(file_id=sha(b"hello kadshare\n")), timeout=RPC_TIMEOUT
        )
        assert info.name == "sub/small.txt"

    async def test_unknown_and_malformed_ids(self, peer: Peer) -> None:
        unknown = kadshare_pb2.InfoRequest(file_id="0" * 64)
        assert await code_of(peer.stub.GetInfo(unknown, timeout=RPC_TIMEOUT)) == (
            grpc.StatusCode.NOT_FOUND
        )
        for bad in ("", "xyz", "0" * 63, "g" * 64, "../etc/passwd"):
            req = kadshare_pb2.InfoRequest(file_id=bad)
            assert await code_of(peer.stub.GetInfo(req, timeout=RPC_TIMEOUT)) == (
                grpc.StatusCode.INVALID_ARGUMENT
            )


class TestDownload:
    @pytest.mark.parametrize(
        ("offset", "length"),
        [
            (0, 0),  # whole file
            (0, 1),  # first byte
            (MiB - 1, 2),  # across a message boundary
            (len(BIG) // 2, 777_777),  # middle
            (len(BIG) - 1, 0),  # last byte, to the end
            (len(BIG) - 1, 1),  # last byte, exact
            (len(BIG) - 10, 1000),  # runs past the end: cut at the end
        ],
    )
    async def test_ranges(self, peer: Peer, offset: int, length: int) -> None:
        got = await download(peer.stub, sha(BIG), offset, length)
        want = BIG[offset:] if length == 0 else BIG[offset : offset + length]
        assert got == want

    @pytest.mark.parametrize("offset", [len(BIG), len(BIG) + 1, 2**63])
    async def test_past_end_is_out_of_range(self, peer: Peer, offset: int) -> None:
        code = await code_of(download(peer.stub, sha(BIG), offset))
        assert code == grpc.StatusCode.OUT_OF_RANGE

    async def test_empty_file(self, peer: Peer) -> None:
        assert await download(peer.stub, sha(b"")) == b""
        code = await code_of(download(peer.stub, sha(b""), 1))
        assert code == grpc.StatusCode.OUT_OF_RANGE

    async def test_unknown_and_malformed(self, peer: Peer) -> None:
        assert await code_of(download(peer.stub, "1" * 64)) == grpc.StatusCode.NOT_FOUND
        assert await code_of(download(peer.stub, "nope")) == grpc.StatusCode.INVALID_ARGUMENT

    async def test_changed_file_is_not_served_stale(self, peer: Peer) -> None:
        path = peer.share / "sub" / "small.txt"
        old = sha(path.read_bytes())
        path.write_bytes(b"different bytes now\n")
        os.utime(path, ns=(1, 1))
        assert await code_of(download(peer.stub, old)) == grpc.StatusCode.NOT_FOUND
        info = peer.stub.GetInfo(kadshare_pb2.InfoRequest(file_id=old), timeout=RPC_TIMEOUT)
        assert await code_of(info) == grpc.StatusCode.NOT_FOUND
        await peer.catalog.scan()
        assert await download(peer.stub, sha(b"different bytes now\n")) == b"different bytes now\n"

    async def test_file_not_in_page_cache(self, peer: Peer) -> None:
        """Bytes that must come from disk (read off the loop) arrive intact."""
        path = peer.share / "big.bin"
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        assert await download(peer.stub, sha(BIG), 12345, 2 * MiB) == BIG[12345 : 12345 + 2 * MiB]

    async def test_file_edited_in_place_mid_stream_is_cut(self, tmp_path: Path) -> None:
        """Same size, new bytes: the stream stops instead of sending bytes of another file."""
        (tmp_path / "share").mkdir()
        data = content(24 * MiB, seed=9)
        path = tmp_path / "share" / "edited.bin"
        path.write_bytes(data)
        p = await Peer(tmp_path).start()
        try:
            call = p.stub.Download(
                kadshare_pb2.DownloadRequest(file_id=sha(data)), timeout=RPC_TIMEOUT
            )
            first = await call.read()
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, b"0123456789", len(data) - 10)
            finally:
                os.close(fd)
            os.utime(path, ns=(5, 5))
            got = bytearray(first.data)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                for _ in range(100):
                    chunk = await call.read()
                    if chunk is grpc.aio.EOF:
                        break
                    got += chunk.data
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert len(got) < len(data) and bytes(got) == data[: len(got)]
        finally:
            await p.close()

    async def test_fifty_concurrent_ranges_all_verify(self, peer: Peer) -> None:
        step = len(BIG) // 50
        ranges = [(i * step, step + (i % 7) * 1000) for i in range(50)]
        results = await asyncio.gather(*(download(peer.stub, sha(BIG), o, n) for o, n in ranges))
        for (offset, length), got in zip(ranges, results, strict=True):
            assert got == BIG[offset : offset + length]

    async def test_slow_reader_does_not_block_others(self, peer: Peer) -> None:
        """A stalled stream holds no one up; other downloads finish meanwhile."""
        slow = peer.stub.Download(
            kadshare_pb2.DownloadRequest(file_id=sha(BIG)), timeout=RPC_TIMEOUT
        )
        first = await slow.read()
        assert first.offset == 0
        others = await asyncio.wait_for(
            asyncio.gather(*(download(peer.stub, sha(BIG)) for _ in range(4))), RPC_TIMEOUT
        )
        assert all(got == BIG for got in others)
        rest = bytearray(first.data)
        for _ in range(100):
            chunk = await slow.read()
            if chunk is grpc.aio.EOF:
                break
            rest += chunk.data
        assert bytes(rest) == BIG


class TestBackpressure:
    async def test_stalled_reader_is_not_buffered_whole(self, tmp_path: Path) -> None:
        """A client that stops reading holds the server to grpc's flow-control window."""
        (tmp_path / "share").mkdir()
        data = content(40 * MiB, seed=3)
        (tmp_path / "share" / "large.bin").write_bytes(data)
        p = await Peer(tmp_path).start()
        try:
            call = p.stub.Download(
                kadshare_pb2.DownloadRequest(file_id=sha(data)), timeout=RPC_TIMEOUT
            )
            first = await call.read()
            assert first.offset == 0
            served = []
            for _ in range(8):  # give an unpaced server every chance to run ahead
                await asyncio.sleep(0.25)
                served.append(metric(p, "kadshare_bytes_served_total"))
            assert max(served) < len(data) // 2
            call.cancel()
        finally:
            await p.close()


def metric(p: Peer, name: str, **labels: str) -> float:
    """A value of the peer's Prometheus registry (what ``/metrics`` shows)."""
    value = p.metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def active_downloads(p: Peer) -> float:
    return metric(p, "kadshare_active_transfers", direction="download")


class TestCaps:
    """--max-upload-rate and --max-upload-slots are applied (benchmarks measure how well)."""

    async def test_upload_rate_cap_holds_streams_back(self, tmp_path: Path) -> None:
        (tmp_path / "share").mkdir()
        (tmp_path / "share" / "big.bin").write_bytes(BIG)
        p = await Peer(tmp_path, max_upload_rate=4 * MiB).start()
        try:
            got = b"".join([m.data async for m in p.stub.Download(
                kadshare_pb2.DownloadRequest(file_id=sha(BIG)), timeout=RPC_TIMEOUT)])
            assert got == BIG
            assert p.servicer.pacer.waited > 0  # 3 MiB at 4 MiB/s after a 1 MiB burst
        finally:
            await p.close()

    async def test_per_client_slot_cap_refuses_with_a_retry_hint(self, tmp_path: Path) -> None:
        (tmp_path / "share").mkdir()
        data = content(24 * MiB, seed=7)
        (tmp_path / "share" / "large.bin").write_bytes(data)
        p = await Peer(tmp_path, max_downloads_per_client=1).start()
        try:
            request = kadshare_pb2.DownloadRequest(file_id=sha(data))
            first = p.stub.Download(request, timeout=RPC_TIMEOUT)
            assert (await first.read()).offset == 0  # holds the one slot
            second = p.stub.Download(request, timeout=RPC_TIMEOUT)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await second.read()
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry in" in (info.value.details() or "")
            assert ("retry-after-ms", "1000") in tuple(info.value.trailing_metadata() or ())
            first.cancel()
            got = None
            for _ in range(100):  # the slot is given back once the handler ends
                third = p.stub.Download(request, timeout=RPC_TIMEOUT)
                try:
                    got = await third.read()
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
            assert got is not None and got.offset == 0
            third.cancel()
        finally:
            await p.close()


class TestStalls:
    async def test_reader_that_stops_is_cut_off(self, tmp_path: Path) -> None:
        """A stuck client does not hold a server stream and a file open forever."""
        (tmp_path / "share").mkdir()
        data = content(24 * MiB, seed=4)
        (tmp_path / "share" / "large.bin").write_bytes(data)
        p = await Peer(tmp_path, stall_timeout=0.5).start()
        try:
            call = p.stub.Download(
                kadshare_pb2.DownloadRequest(file_id=sha(data)), timeout=RPC_TIMEOUT
            )
            await call.read()
            for _ in range(100):
                await asyncio.sleep(0.1)
                if active_downloads(p) == 0:
                    break
            assert active_downloads(p) == 0
            with pytest.raises(grpc.aio.AioRpcError) as info:
                for _ in range(100):
                    if await call.read() is grpc.aio.EOF:
                        break
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert await download(p.stub, sha(data), 5, 10) == data[5:15]  # still serving
        finally:
            await p.close()


class TestClientLeaves:
    async def test_cancelled_downloads_are_not_errors(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Clients cancel streams all the time (multi-source endgame): no ERROR, no leak."""
        (tmp_path / "share").mkdir()
        data = content(24 * MiB, seed=8)
        (tmp_path / "share" / "large.bin").write_bytes(data)
        p = await Peer(tmp_path).start()
        caplog.set_level(logging.INFO, logger="pserver")
        try:
            for _ in range(10):
                call = p.stub.Download(
                    kadshare_pb2.DownloadRequest(file_id=sha(data)), timeout=RPC_TIMEOUT
                )
                await call.read()
                call.cancel()
            for _ in range(100):
                if active_downloads(p) == 0:
                    break
                await asyncio.sleep(0.1)
            assert active_downloads(p) == 0
            assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
            assert await download(p.stub, sha(data), 0, 100) == data[:100]
        finally:
            await p.close()


class TestLimits:
    async def test_downloads_over_the_limit_are_refused_not_queued(self, tmp_path: Path) -> None:
        (tmp_path / "share").mkdir()
        data = content(24 * MiB, seed=6)
        (tmp_path / "share" / "large.bin").write_bytes(data)
        p = await Peer(tmp_path, max_concurrent_downloads=2).start()
        try:
            held = [p.stub.Download(kadshare_pb2.DownloadRequest(file_id=sha(data)),
                                    timeout=RPC_TIMEOUT) for _ in range(2)]
            for call in held:
                await call.read()  # both streams are now open and stalled
            code = await code_of(download(p.stub, sha(data), 0, 10))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            for call in held:
                call.cancel()
            for _ in range(100):  # the server notices the cancellations
                try:
                    assert await download(p.stub, sha(data), 0, 10) == data[:10]
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("slots never came back")
        finally:
            await p.close()


class TestLinks:
    async def test_symlink_leaving_share_is_never_served(self, tmp_path: Path) -> None:
        outside = tmp_path / "secret.txt"
        outside.write_bytes(b"top secret\n")
        share = tmp_path / "share"
        share.mkdir()
        (share / "inside.txt").write_bytes(b"public\n")
        (share / "escape.txt").symlink_to(outside)
        (share / "alias.txt").symlink_to(share / "inside.txt")
        (share / "updir").symlink_to(tmp_path)
        p = await Peer(tmp_path).start()
        try:
            names = {f.name for f in p.catalog.files()}
            assert len(names) == 1  # the inner alias has the same bytes: one id, listed once
            assert names <= {"inside.txt", "alias.txt"}
            assert await code_of(download(p.stub, sha(b"top secret\n"))) == (
                grpc.StatusCode.NOT_FOUND
            )
            assert await download(p.stub, sha(b"public\n")) == b"public\n"
        finally:
            await p.close()


class TestUpload:
    async def test_accepted_verified_and_reported(self, uploader: Peer) -> None:
        data = content(MiB + 5, seed=7)
        reply = await upload(uploader.stub, "report.pdf", data, piece=300_000)
        assert (reply.file_id, reply.name, reply.size) == (sha(data), "report.pdf", len(data))
        assert (uploader.share / "report.pdf").read_bytes() == data
        assert [e.file_id for e in uploader.uploaded] == [sha(data)]
        assert await download(uploader.stub, sha(data)) == data
        info = await uploader.stub.GetInfo(
            kadshare_pb2.InfoRequest(file_id=sha(data)), timeout=RPC_TIMEOUT
        )
        assert list(info.chunk_hashes) == [
            leaf_hash(data[:MiB]), leaf_hash(data[MiB:])
        ]
        assert uploader.catalog.hash_calls == 0  # the upload's own hashes were kept

    async def test_refused_without_the_flag(self, peer: Peer) -> None:
        code = await code_of(upload(peer.stub, "a.txt", b"data"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert not (peer.share / "a.txt").exists()

    async def test_refused_over_the_cap(self, uploader: Peer) -> None:
        data = content(2 * MiB + 1, seed=3)
        assert await code_of(upload(uploader.stub, "big.bin", data)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        self.assert_no_leftovers(uploader)

    async def test_refused_when_more_bytes_than_declared(self, uploader: Peer) -> None:
        data = content(1000, seed=3)
        code = await code_of(upload(uploader.stub, "x.bin", data, declared_size=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code = await code_of(upload(uploader.stub, "x.bin", data, declared_size=5000))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        self.assert_no_leftovers(uploader)

    async def test_refused_with_a_wrong_hash(self, uploader: Peer) -> None:
        data = content(MiB, seed=4)
        code = await code_of(upload(uploader.stub, "a.bin", data, declared_id=sha(b"other")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code = await code_of(upload(uploader.stub, "a.bin", data, declared_id="zz"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        self.assert_no_leftovers(uploader)
        assert uploader.uploaded == []

    @pytest.mark.parametrize(
        "name",
        ["../evil.txt", "..", "sub/../../evil.txt", "/etc/passwd", ".hidden", "a\\b", "",
         "x\x00y", "a" * 300, "..\\up", " padded", "sub//evil.txt", "sub/.hidden/evil.txt",
         "C:/evil.txt", "sub/" * 1100 + "evil.txt"],
    )
    async def test_refused_names(self, uploader: Peer, name: str) -> None:
        code = await code_of(upload(uploader.stub, name, b"payload"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        self.assert_no_leftovers(uploader)
        assert not (uploader.share.parent / "evil.txt").exists()

    async def test_existing_name_is_not_overwritten(self, uploader: Peer) -> None:
        await upload(uploader.stub, "keep.txt", b"first")
        code = await code_of(upload(uploader.stub, "keep.txt", b"second"))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert (uploader.share / "keep.txt").read_bytes() == b"first"

    async def test_data_before_header_is_refused(self, uploader: Peer) -> None:
        async def messages():
            yield kadshare_pb2.UploadMessage(data=b"no header")

        code = await code_of(uploader.stub.Upload(messages(), timeout=RPC_TIMEOUT, metadata=AUTH))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        self.assert_no_leftovers(uploader)

    async def test_needs_the_token_unless_open(self, tmp_path: Path) -> None:
        for sub in ("g", "o"):
            (tmp_path / sub).mkdir()
        guarded = await Peer(tmp_path / "g", accept_uploads=True).start()
        try:
            assert await code_of(upload(guarded.stub, "a.txt", b"a", token=None)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            assert await code_of(upload(guarded.stub, "a.txt", b"a", token="guess")) == (
                grpc.StatusCode.PERMISSION_DENIED
            )
            assert not (guarded.share / "a.txt").exists()
        finally:
            await guarded.close()
        opened = await Peer(tmp_path / "o", accept_uploads=True, open_uploads=True).start()
        try:
            reply = await upload(opened.stub, "a.txt", b"a", token=None)
            assert reply.file_id == sha(b"a")
        finally:
            await opened.close()

    async def test_silent_uploader_is_cut_off(self, tmp_path: Path) -> None:
        p = await Peer(tmp_path, accept_uploads=True, stall_timeout=0.5).start()
        release = asyncio.Event()

        async def messages():
            header = kadshare_pb2.UploadHeader(name="slow.bin", size=10, file_id=sha(b"x" * 10))
            yield kadshare_pb2.UploadMessage(header=header)
            yield kadshare_pb2.UploadMessage(data=b"x" * 5)
            await release.wait()  # then goes quiet

        try:
            code = await code_of(p.stub.Upload(messages(), timeout=RPC_TIMEOUT, metadata=AUTH))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            self.assert_no_leftovers(p)
        finally:
            release.set()
            await p.close()

    @staticmethod
    def assert_no_leftovers(p: Peer) -> None:
        assert sorted(os.listdir(p.share)) == []


class TestStandardServices:
    async def test_health_and_reflection(self, peer: Peer) -> None:
        health = health_pb2_grpc.HealthStub(peer.channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(peer.channel)

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = []
        async for answer in stub.ServerReflectionInfo(ask(), timeout=RPC_TIMEOUT):
            names = [s.name for s in answer.list_services_response.service]
            break
        assert SERVICE_NAME in names


class TestWireFormat:
    @pytest.mark.parametrize("offset", [0, 1, 127, 128, 300, 2**32 + 5, 2**64 - 1])
    @pytest.mark.parametrize("length", [1, 127, 128, 1024 * 1024])
    def test_prebuilt_chunk_equals_protobuf(self, offset: int, length: int) -> None:
        from pserver.transfer import chunk_header

        data = bytes(range(256)) * (length // 256) + bytes(length % 256)
        want = kadshare_pb2.Chunk(offset=offset, data=data).SerializeToString()
        assert chunk_header(offset, length) + data == want
