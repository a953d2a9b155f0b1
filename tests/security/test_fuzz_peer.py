"""Fuzzing a real peer's REST API and gRPC TransferService.

One ``pserver.Node`` runs on a background loop (real HTTP, gRPC and UDP sockets on
127.0.0.1) while hypothesis throws request after request at it. Properties: REST answers
every request with a status below 500 and, for errors, a JSON ``{"error": ...}``; gRPC
never answers UNKNOWN or INTERNAL; nothing lands in the share folder except verified
uploads with plain names; afterwards the node still serves status, search and a correct
download. The pserver owner's tests (``tests/pserver``) check each documented error case;
these generate inputs nobody listed.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.config import DhtConfig
from kadcommon.merkle import file_id_of_bytes
from pclient.grpcutil import verified_credentials
from protos import kadshare_pb2 as pb
from protos import kadshare_pb2_grpc as pb_grpc
from pserver.config import NodeConfig
from pserver.folders import FOLDERS_DIR
from pserver.node import Node
from tests.security.fuzzing import budget
from tests.security.nodethread import LoopThread

CONTENT = b"kadshare fuzz target " * 5000
FILE_ID = file_id_of_bytes(CONTENT)
MAX_UPLOAD = 64 * 1024
# the node's background loops use `random` on their thread while examples run
pytestmark = [
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
    budget(),
]
ALLOWED_GRPC = {
    grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}


class Peer:
    """The node under test and clients for it."""

    def __init__(self, root: Path) -> None:
        self.share = root / "share"
        self.share.mkdir()
        (self.share / "target file.bin").write_bytes(CONTENT)
        self.lt = LoopThread()
        config = NodeConfig(
            data_dir=root / "data", share_dir=self.share, accept_uploads=True,
            max_upload=MAX_UPLOAD, dht_config=DhtConfig.for_tests(),
        )
        self.node: Node = self.lt.run(Node.start(config), timeout=90)
        info = self.node.info
        self.base = f"http://127.0.0.1:{info['rest_port']}"
        self.rest_port = info["rest_port"]
        self.http = httpx.Client(base_url=self.base, timeout=30.0)
        address = f"127.0.0.1:{info['grpc_port']}"
        creds, options = verified_credentials(address, expected=info["node_id"])
        self.channel = grpc.secure_channel(address, creds, options=options)
        self.stub = pb_grpc.TransferServiceStub(self.channel)
        self.token = self.node.token
        self.auth = (("authorization", f"Bearer {self.token}"),)

    def close(self) -> None:
        self.http.close()
        self.channel.close()
        try:
            self.lt.run(self.node.stop(), timeout=60)
        finally:
            self.lt.close()


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    p = Peer(tmp_path_factory.mktemp("fuzzpeer"))
    try:
        yield p
    finally:
        p.close()


def check_rest(reply: httpx.Response | tuple[int, bytes]) -> int:
    """The REST property: no 5xx but the defined 503 of a lookup that reached nobody
    (this peer is alone), and every error is JSON with an "error" string."""
    status, body = (reply.status_code, reply.content) if isinstance(
        reply, httpx.Response) else reply
    assert status < 500 or (status == 503 and b"reached nobody" in body), (status, body[:300])
    if status >= 400:
        parsed = json.loads(body)
        assert isinstance(parsed.get("error"), str) and parsed["error"], parsed
    return status


def raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client-side normalisation); return (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


segment = st.text(max_size=80) | st.sampled_from(
    ["..", "../..", "%2e%2e", FILE_ID, FILE_ID.upper(), FILE_ID[:-1], FILE_ID + "0", " ",
     "\x00", "%00", "0" * 64, "g" * 64, "😀" * 16]
)
target_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
raw_targets = st.text(target_chars, min_size=1, max_size=200).map(lambda t: "/" + t)
bodies = st.none() | st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["path", "file_id", "x"]) | st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
).map(lambda v: json.dumps(v).encode())
auths = st.sampled_from([None, "", "Bearer", "Bearer ", "Basic abc", "bearer WRONG"]) | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


class TestRest:
    @given(segment)
    def test_path_parameters(self, peer: Peer, value: str) -> None:
        quoted = urllib.parse.quote(value, safe="")
        for path in (f"/files/{quoted}", f"/providers/{quoted}"):
            check_rest(peer.http.get(path))

    @given(st.text(max_size=600) | segment)
    def test_search_query(self, peer: Peer, query: str) -> None:
        status = check_rest(peer.http.get("/search", params={"q": query}))
        assert status in (200, 400, 503)

    @given(raw_targets, st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS"]))
    def test_raw_request_targets(self, peer: Peer, target: str, method: str) -> None:
        request = (f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                   "Connection: close\r\n\r\n").encode()
        status, body = raw_http(peer.rest_port, request)
        if method != "HEAD":
            check_rest((status, body))
        else:
            assert status < 500

    @given(bodies, st.booleans(), st.sampled_from(["POST", "DELETE"]), segment)
    @settings(max_examples=max(1, settings.default.max_examples // 2))
    def test_write_calls(self, peer: Peer, body: bytes, good_token: bool, method: str,
                         fid: str) -> None:
        headers = {"Authorization": f"Bearer {peer.token}" if good_token else "Bearer nope"}
        if method == "POST":
            reply = peer.http.post("/files", content=body, headers=headers)
        else:
            reply = peer.http.delete(f"/files/{urllib.parse.quote(fid, safe='')}",
                                     headers=headers)
        status = check_rest(reply)
        if not good_token:  # refused before anything else, unless no such route at all
            assert status in (403, 404, 405), status
        if method == "DELETE" and status == 200:  # we unshared the target: share it again
            again = peer.http.post("/files", json={"path": str(peer.share / "target file.bin")},
                                   headers={"Authorization": f"Bearer {peer.token}"})
            assert again.status_code in (200, 201), again.text

    @given(auths)
    def test_authorization_header(self, peer: Peer, auth: str | None) -> None:
        headers = {} if auth is None else {"Authorization": auth}
        try:
            reply = peer.http.post("/files", json={"path": "/nonexistent"}, headers=headers)
        except httpx.LocalProtocolError:  # header httpx itself refuses to send
            return
        status = check_rest(reply)
        assert status in (401, 403)


class TestRestLimits:
    def test_oversized_body_is_refused_with_json(self, peer: Peer) -> None:
        headers = {"Authorization": f"Bearer {peer.token}"}
        reply = peer.http.post("/files", content=b"{" + b" " * 200_000 + b"}", headers=headers)
        assert check_rest(reply) == 413

    def test_overlong_query_is_400(self, peer: Peer) -> None:
        assert check_rest(peer.http.get("/search", params={"q": "a" * 5000})) == 400


def grpc_code(call: Any) -> grpc.StatusCode:
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            for _ in result:
                pass
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


ids = st.text(max_size=80) | st.sampled_from([FILE_ID, FILE_ID.upper(), "0" * 64, ""])
u64 = st.integers(0, 2**64 - 1) | st.integers(0, len(CONTENT) + 2)


class TestGrpc:
    @given(ids)
    def test_get_info(self, peer: Peer, fid: str) -> None:
        code = grpc_code(lambda: peer.stub.GetInfo(pb.InfoRequest(file_id=fid), timeout=20))
        assert code in ALLOWED_GRPC, code

    @given(ids, u64, u64)
    def test_download(self, peer: Peer, fid: str, offset: int, length: int) -> None:
        req = pb.DownloadRequest(file_id=fid, offset=offset, length=length)
        code = grpc_code(lambda: peer.stub.Download(req, timeout=20))
        assert code in ALLOWED_GRPC, code
        if fid == FILE_ID and offset < len(CONTENT):
            assert code == grpc.StatusCode.OK

    @given(
        st.lists(
            st.builds(lambda n, s, f: pb.UploadMessage(header=pb.UploadHeader(
                name=n, size=s, file_id=f)), st.text(max_size=40) | st.sampled_from(
                    ["..", "../x", "/etc/x", ".hidden", "a/b", "ok.txt", "con", "a\x00b"]),
                u64, ids)
            | st.builds(lambda d: pb.UploadMessage(data=d), st.binary(max_size=2048)),
            max_size=5,
        )
    )
    @settings(max_examples=max(1, settings.default.max_examples // 2))
    def test_upload_messages(self, peer: Peer, messages: list) -> None:
        code = grpc_code(lambda: peer.stub.Upload(iter(messages), timeout=20,
                                                   metadata=peer.auth))
        assert code in ALLOWED_GRPC, code
        _share_folder_is_clean(peer)

    @given(st.text(min_size=1, max_size=40), st.binary(max_size=4096))
    @settings(max_examples=max(1, settings.default.max_examples // 3))
    def test_upload_valid_content_any_name(self, peer: Peer, name: str, data: bytes) -> None:
        header = pb.UploadHeader(name=name, size=len(data),
                                 file_id=file_id_of_bytes(data))
        messages = [pb.UploadMessage(header=header), pb.UploadMessage(data=data)]
        code = grpc_code(lambda: peer.stub.Upload(iter(messages), timeout=20,
                                                   metadata=peer.auth))
        assert code in ALLOWED_GRPC, code
        if code == grpc.StatusCode.OK:  # a name may be a relative path (kadcommon.names)
            stored = peer.share.joinpath(*name.rstrip("/").split("/"))
            stored.resolve().relative_to(peer.share.resolve())  # inside the share folder
            if name.endswith("/"):
                assert stored.is_dir() and not data, name
            else:
                assert stored.read_bytes() == data
        _share_folder_is_clean(peer)


def _share_folder_is_clean(peer: Peer) -> None:
    """Everything in the share folder is a plain, fully verified file or a real folder,
    inside it, with a visible name."""
    top = peer.share.resolve()
    for path in peer.share.rglob("*"):
        path.resolve().relative_to(top)
        assert not path.is_symlink(), path
        assert path.is_file() or path.is_dir(), path
        if path.name == "target file.bin":
            continue
        if path.relative_to(peer.share).parts[0] == FOLDERS_DIR:
            continue  # the peer's own manifests of shared folders (an uploaded "a/b")
        assert not path.name.startswith("."), f"temporary upload left behind: {path.name}"


class TestClientGoesAway:
    def test_cancelled_download_is_not_an_error_in_the_peer_log(
        self, peer: Peer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A client cancelling a stream (a multi-source endgame does it all the time) is
        normal: the peer must not log it as an ERROR with a traceback."""
        big = peer.share / "big stream.bin"
        big.write_bytes(b"\x01" * (24 * 1024 * 1024))
        big_id = file_id_of_bytes(big.read_bytes())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the scan picks it up within seconds
            if peer.http.get(f"/files/{big_id}").status_code == 200:
                break
            time.sleep(0.2)
        caplog.set_level(logging.INFO)
        for _ in range(5):
            call = peer.stub.Download(pb.DownloadRequest(file_id=big_id), timeout=30)
            next(iter(call))
            call.cancel()
        time.sleep(2.0)  # let the peer notice (bounded; nothing to poll for an absence)
        errors = [r for r in caplog.records
                  if r.levelno >= logging.ERROR and r.name.startswith("pserver")]
        assert not errors, [r.getMessage() for r in errors]


class TestAfterFuzzing:
    def test_peer_still_serves(self, peer: Peer) -> None:
        assert peer.http.get("/status").status_code == 200
        hits = peer.http.get("/search", params={"q": "target"}).json()["results"]
        assert FILE_ID in {h["file_id"] for h in hits}
        data = b"".join(c.data for c in peer.stub.Download(
            pb.DownloadRequest(file_id=FILE_ID, offset=0, length=0), timeout=30))
        assert file_id_of_bytes(data) == FILE_ID
