"""Uploads into folders (``kadshare put DIR``) on a real gRPC server: names checked like
folder manifest paths, parents created inside the share folder only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from protos import kadshare_pb2
from pserver.config import NodeConfig
from tests.pserver.helpers import RPC_TIMEOUT, TEST_TOKEN, sha, upload
from tests.pserver.test_transfer import Peer, code_of

AUTH = (("authorization", f"Bearer {TEST_TOKEN}"),)


@pytest.fixture
async def uploader(tmp_path: Path) -> AsyncIterator[Peer]:
    p = await Peer(tmp_path, accept_uploads=True).start()
    yield p
    await p.close()


async def make_folder(p: Peer, name: str, size: int = 0,
                      data: bytes = b"") -> kadshare_pb2.UploadReply:
    async def messages() -> AsyncIterator[kadshare_pb2.UploadMessage]:
        yield kadshare_pb2.UploadMessage(
            header=kadshare_pb2.UploadHeader(name=name, size=size, file_id=""))
        if data:
            yield kadshare_pb2.UploadMessage(data=data)

    return await p.stub.Upload(messages(), timeout=RPC_TIMEOUT, metadata=AUTH)


async def test_upload_into_new_nested_folders(uploader: Peer) -> None:
    name = "Album été/disc 1/ünï ☃.txt"
    reply = await upload(uploader.stub, name, b"la la\n")
    assert (reply.name, reply.file_id) == (name, sha(b"la la\n"))
    assert (uploader.share / "Album été" / "disc 1" / "ünï ☃.txt").read_bytes() == b"la la\n"
    assert [e.name for e in uploader.catalog.files()] == [name]
    await upload(uploader.stub, "Album été/empty.txt", b"")  # an empty file, a known folder
    assert (uploader.share / "Album été" / "empty.txt").read_bytes() == b""
    # the same bytes again under the same path: accepted, nothing changes (a resumed put)
    assert (await upload(uploader.stub, name, b"la la\n")).file_id == sha(b"la la\n")


async def test_folder_headers_create_empty_folders(uploader: Peer) -> None:
    reply = await make_folder(uploader, "Album/vide/")
    assert (reply.name, reply.size) == ("Album/vide/", 0)
    assert (uploader.share / "Album" / "vide").is_dir()
    await make_folder(uploader, "Album/vide/")  # again: already there, fine
    assert await code_of(make_folder(uploader, "Album/x/", size=3, data=b"abc")) == (
        grpc.StatusCode.INVALID_ARGUMENT)
    assert not (uploader.share / "Album" / "x").exists()
    assert await code_of(make_folder(uploader, "Album/../../x/")) == (
        grpc.StatusCode.INVALID_ARGUMENT)


async def test_failed_upload_leaves_no_new_folder(uploader: Peer) -> None:
    code = await code_of(upload(uploader.stub, "new/deeper/a.bin", b"payload",
                                declared_id=sha(b"other")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert os.listdir(uploader.share) == []


async def test_links_files_and_case_twins_in_the_way_are_refused(
    uploader: Peer, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, uploader.share / "link")
    (uploader.share / "a.txt").write_bytes(b"a")
    await upload(uploader.stub, "Photos/x.jpg", b"x")
    for name in ("link/evil.txt", "a.txt/b.txt", "photos/y.jpg", "Photos/X.JPG"):
        code = await code_of(upload(uploader.stub, name, b"payload"))
        assert code.code == grpc.StatusCode.INVALID_ARGUMENT, name
    assert "case" in (await code_of(upload(uploader.stub, "photos/y.jpg", b"y"))).details
    assert os.listdir(outside) == []
    assert sorted(os.listdir(uploader.share)) == ["Photos", "a.txt", "link"]
    assert os.listdir(uploader.share / "Photos") == ["x.jpg"]


async def test_data_folder_inside_the_share_folder_is_refused(tmp_path: Path) -> None:
    p = Peer(tmp_path, accept_uploads=True)
    p.data = p.share / "state"
    p.data.mkdir()
    p.config = NodeConfig(data_dir=p.data, share_dir=p.share, accept_uploads=True)
    await p.start()
    try:
        for name in ("state/new.txt", "state/sub/new.txt", "state/"):
            if name.endswith("/"):
                code = await code_of(make_folder(p, name))
            else:
                code = await code_of(upload(p.stub, name, b"payload"))
            assert code.code == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "data folder" in code.details
        assert not (p.data / "new.txt").exists() and not (p.data / "sub").exists()
    finally:
        await p.close()
