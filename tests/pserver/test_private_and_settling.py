"""Issue 10, items 1, 2, 12, 15, 16: what a peer must never share, and when it shares.

The data folder holds the node's private key and REST token: whatever the layout, no
peer may fetch them. Files still being written (a copy in progress, a download's part
file) must not be announced under the ids of their intermediate states.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kadcommon.merkle import CHUNK_SIZE, file_id_of_bytes
from pserver.catalog import Catalog
from pserver.errors import FileNotShared, PeerError
from tests.pserver.conftest import Peers, rest_url

CHUNK = CHUNK_SIZE  # the protocol constant: part of the file id
SCRIPT = str(Path(sys.executable).parent / "kadshare-node")


def sha(data: bytes) -> str:
    return file_id_of_bytes(data)


def old(path: Path, seconds: float = 3600) -> None:
    """Give ``path`` an mtime far enough back that it counts as settled."""
    past = time.time() - seconds
    os.utime(path, (past, past))


class TestDataFolderIsNeverShared:
    async def test_data_folder_inside_share_folder(self, peers: Peers) -> None:
        base = peers.root / "inside"
        share = base / "share"
        node = await peers.start({"holiday.jpg": b"photo"}, base=base,
                                 data_dir=share / "kd")
        names = {f.name for f in node.catalog.files()}
        assert names == {"holiday.jpg"}
        assert (share / "kd" / "identity.key").exists()  # it is there, and not shared
        key_id = sha((share / "kd" / "identity.key").read_bytes())
        token_id = sha((share / "kd" / "token").read_bytes())
        for secret in (key_id, token_id):
            with pytest.raises(FileNotShared):
                node.catalog.get(secret)

    async def test_links_and_post_cannot_reach_the_data_folder(
        self, peers: Peers
    ) -> None:
        base = peers.root / "links"
        node = await peers.start({"a.txt": b"a"}, base=base)
        share, data = base / "share", base / "data"
        (share / "key-link").symlink_to(data / "identity.key")
        (share / "data-link").symlink_to(data, target_is_directory=True)
        await node.catalog.scan()
        assert {f.name for f in node.catalog.files()} == {"a.txt"}
        token = (data / "token").read_text().strip()
        async with httpx.AsyncClient(timeout=20) as http:
            answer = await http.post(
                f"{rest_url(node)}/files", json={"path": str(data / "identity.key")},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 400
        assert "data folder" in answer.json()["error"]

    @pytest.mark.parametrize("layout", ["same", "share-inside-data"])
    def test_refused_layouts_exit_2_with_one_line(self, tmp_path: Path, layout: str) -> None:
        data = tmp_path / "d"
        share = data if layout == "same" else data / "s"
        share.mkdir(parents=True)
        result = subprocess.run(
            [SCRIPT, "--share", str(share), "--data", str(data), "--dht-port", "0",
             "--grpc-port", "0", "--rest-port", "0"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "data" in lines[0] and "never shared" in lines[0]
        assert not (data / "identity.key").exists()  # refused before anything was written


class TestSettling:
    def make(self, tmp: Path, settle: float) -> Catalog:
        (tmp / "share").mkdir(exist_ok=True)
        (tmp / "data").mkdir(exist_ok=True)
        catalog = Catalog(tmp / "share", tmp / "data", CHUNK, settle_seconds=settle)
        catalog.load()
        return catalog

    async def test_a_growing_file_is_announced_once_with_its_final_id(
        self, tmp_path: Path
    ) -> None:
        catalog = self.make(tmp_path, settle=30.0)
        path = tmp_path / "share" / "movie.mkv"
        seen_ids: set[str] = set()
        with open(path, "wb") as growing:  # noqa: ASYNC230 (the test plays a slow copier)
            for step in range(5):  # a copy in progress: every scan sees a new size
                growing.write(bytes([step]) * 100_000)
                growing.flush()
                await catalog.scan()
                seen_ids.update(f.file_id for f in catalog.files())
        assert seen_ids == set()
        assert catalog.settling == 1
        assert catalog.hash_calls == 0  # no rehash storm while it grows
        old(path)  # the copy finished long enough ago
        await catalog.scan()
        final = sha(path.read_bytes())
        assert [f.file_id for f in catalog.files()] == [final]

    async def test_files_already_there_are_shared_at_once(self, tmp_path: Path) -> None:
        catalog = self.make(tmp_path, settle=30.0)
        path = tmp_path / "share" / "old.txt"
        path.write_bytes(b"was here before")
        old(path)
        await catalog.scan()
        assert [f.name for f in catalog.files()] == ["old.txt"]

    async def test_download_temp_files_are_never_shared(self, tmp_path: Path) -> None:
        catalog = self.make(tmp_path, settle=0.0)
        fid = "ab" * 32
        for name in (f".kadshare-dl-{fid}.part", f".kadshare-dl-{fid}.part.state"):
            (tmp_path / "share" / name).write_bytes(b"half a file")
            old(tmp_path / "share" / name)
        await catalog.scan()
        assert catalog.files() == []

    async def test_node_start_waits_for_fresh_files(self, peers: Peers) -> None:
        node = await peers.start({"fresh.txt": b"just written"}, settle_seconds=0.6)
        assert [f.name for f in node.catalog.files()] == ["fresh.txt"]


class TestSkippedFilesAndNames:
    async def test_folder_link_leaving_the_share_warns_once(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (tmp_path / "outside").mkdir()
        (tmp_path / "outside" / "x.txt").write_bytes(b"x")
        (tmp_path / "share").mkdir()
        (tmp_path / "data").mkdir()
        (tmp_path / "share" / "elsewhere").symlink_to(tmp_path / "outside")
        catalog = Catalog(tmp_path / "share", tmp_path / "data", CHUNK)
        with caplog.at_level(logging.WARNING, logger="pserver.catalog"):
            await catalog.scan()
            await catalog.scan()
        warnings = [r.getMessage() for r in caplog.records if "elsewhere" in r.getMessage()]
        assert len(warnings) == 1 and "leaving the share folder" in warnings[0]
        assert catalog.files() == []

    async def test_a_link_to_a_shared_file_does_not_rename_it(self, tmp_path: Path) -> None:
        share = tmp_path / "share"
        share.mkdir()
        (tmp_path / "data").mkdir()
        (share / "zebra.txt").write_bytes(b"stripes")
        (share / "a-link.txt").symlink_to(share / "zebra.txt")
        catalog = Catalog(share, tmp_path / "data", CHUNK)
        await catalog.scan()
        assert [f.name for f in catalog.files()] == ["zebra.txt"]

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: no unreadable file")
    async def test_unreadable_file_warns_once(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        share = tmp_path / "share"
        share.mkdir()
        (share / "secret.txt").write_bytes(b"s")
        (share / "secret.txt").chmod(0)
        catalog = Catalog(share, tmp_path / "data", CHUNK)
        with caplog.at_level(logging.WARNING, logger="pserver.catalog"):
            await catalog.scan()
            await catalog.scan()
        assert sum("secret.txt" in r.getMessage() for r in caplog.records) == 1


async def test_post_of_a_data_file_is_refused_by_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "token").write_bytes(b"t")
    catalog = Catalog(None, tmp_path / "data", CHUNK)
    with pytest.raises(PeerError, match="data folder"):
        await catalog.share_path(tmp_path / "data" / "token")


async def test_node_json_is_removed_on_stop(peers: Peers) -> None:
    node = await peers.start()
    node_json = node.config.data_dir / "node.json"
    assert node_json.exists()
    await node.stop()
    assert not node_json.exists()
