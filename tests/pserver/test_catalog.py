"""The share-folder index: subfolders, links, changes, and the persisted hash cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kadcommon.merkle import CHUNK_SIZE
from pserver.catalog import Catalog
from pserver.errors import FileNotShared, InvalidFileId, PeerError
from tests.pserver.helpers import content, sha

CHUNK = CHUNK_SIZE  # the protocol constant: part of the file id


def make(tmp: Path, **options: float) -> Catalog:
    catalog = Catalog(tmp / "share", tmp / "data", CHUNK, **options)
    catalog.load()
    return catalog


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    (tmp_path / "share" / "deep" / "deeper").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "share" / "a.txt").write_bytes(b"alpha")
    (tmp_path / "share" / "deep" / "deeper" / "b.bin").write_bytes(content(200_000, 2))
    (tmp_path / "share" / ".hidden").write_bytes(b"not shared")
    (tmp_path / "share" / ".git").mkdir()
    (tmp_path / "share" / ".git" / "config").write_bytes(b"not shared either")
    return tmp_path


class TestScan:
    async def test_subfolders_and_hidden(self, folders: Path) -> None:
        catalog = make(folders)
        assert await catalog.scan()
        assert [f.name for f in catalog.files()] == ["a.txt", "deep/deeper/b.bin"]
        big = catalog.get(sha(content(200_000, 2)))
        assert big.size == 200_000 and len(big.chunk_hashes) == 1

    async def test_added_removed_renamed_are_picked_up(self, folders: Path) -> None:
        catalog = make(folders)
        await catalog.scan()
        assert not await catalog.scan()  # nothing changed
        (folders / "share" / "new.txt").write_bytes(b"new file")
        (folders / "share" / "a.txt").rename(folders / "share" / "deep" / "renamed.txt")
        (folders / "share" / "deep" / "deeper" / "b.bin").unlink()
        assert await catalog.scan()
        assert {f.name: f.file_id for f in catalog.files()} == {
            "deep/renamed.txt": sha(b"alpha"),
            "new.txt": sha(b"new file"),
        }
        with pytest.raises(FileNotShared):
            catalog.get(sha(content(200_000, 2)))

    async def test_ids_are_validated(self, folders: Path) -> None:
        catalog = make(folders)
        await catalog.scan()
        with pytest.raises(InvalidFileId):
            catalog.get("../../etc/passwd")
        assert catalog.get(sha(b"alpha").upper()).name == "a.txt"


class TestCache:
    async def test_restart_does_not_rehash(self, folders: Path) -> None:
        first = make(folders)
        await first.scan()
        assert first.hash_calls == 2
        second = make(folders)  # a new process would build exactly this
        await second.scan()
        assert second.hash_calls == 0
        assert [f.file_id for f in second.files()] == [f.file_id for f in first.files()]
        assert second.get(sha(b"alpha")).chunk_hashes == first.get(sha(b"alpha")).chunk_hashes

    async def test_touched_file_is_rehashed(self, folders: Path) -> None:
        first = make(folders)
        await first.scan()
        path = folders / "share" / "a.txt"
        path.write_bytes(b"alpha!")
        os.utime(path, ns=(10**18, 10**18))
        second = make(folders)
        await second.scan()
        assert second.hash_calls == 1
        assert second.get(sha(b"alpha!")).name == "a.txt"

    async def test_corrupt_cache_is_ignored(self, folders: Path) -> None:
        await make(folders).scan()
        (folders / "data" / "hashcache.msgpack").write_bytes(b"\xc1garbage")
        again = make(folders)
        await again.scan()
        assert again.hash_calls == 2 and len(again) == 2


class TestShareByPath:
    async def test_share_unshare_and_restart(self, folders: Path) -> None:
        outside = folders / "elsewhere.iso"
        outside.write_bytes(b"iso bytes")
        catalog = make(folders)
        await catalog.scan()
        entry = await catalog.share_path(outside)
        assert (entry.name, entry.file_id) == ("elsewhere.iso", sha(b"iso bytes"))
        await catalog.unshare(sha(b"alpha"))
        assert {f.name for f in catalog.files()} == {"elsewhere.iso", "deep/deeper/b.bin"}
        restarted = make(folders)
        await restarted.scan()
        assert {f.name for f in restarted.files()} == {"elsewhere.iso", "deep/deeper/b.bin"}
        assert (folders / "share" / "a.txt").read_bytes() == b"alpha"  # untouched on disk
        await restarted.share_path(folders / "share" / "a.txt")  # shared again
        assert restarted.get(sha(b"alpha")).name == "a.txt"

    async def test_hidden_file_in_share_folder(self, folders: Path) -> None:
        catalog = make(folders)
        await catalog.scan()
        entry = await catalog.share_path(folders / "share" / ".git" / "config")
        assert entry.file_id == sha(b"not shared either")
        assert sha(b"not shared either") in {f.file_id for f in catalog.files()}

    async def test_bad_paths(self, folders: Path) -> None:
        catalog = make(folders)
        for bad in (Path("relative.txt"), folders / "missing", folders / "share"):
            with pytest.raises(PeerError):
                await catalog.share_path(bad)


class TestLongScan:
    async def test_partial_results_are_shown_and_cached(self, folders: Path) -> None:
        for i in range(3):
            (folders / "share" / f"more{i}.txt").write_bytes(f"more {i}".encode())
        catalog = make(folders, publish_every=0.0)
        seen: list[int] = []

        async def progress() -> None:
            seen.append(len(catalog))
            assert (folders / "data" / "hashcache.msgpack").exists()

        catalog.on_progress = progress
        await catalog.scan()
        assert seen and seen[0] < 5 and seen == sorted(seen)
        assert len(catalog) == 5
