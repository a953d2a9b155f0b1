"""Folders of the share folder shared as units: one signed manifest per top-level folder.

Each visible folder directly inside the share folder gets a manifest (kadcommon.manifest)
listing its tree, signed with the node's identity, written to
``SHARE/.kadshare-folders/<folder>.kadfolder`` and shared by reference like a
``POST /files`` file: the manifest is content, so the folder has an id (the manifest's
Merkle id), is found by the words of its name and fetched like any file. The folder's
files stay shared one by one too. A manifest is (re)built only once every file in the
folder is hashed, so a half-copied folder is never published as complete.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from kadcommon.atomic import write_atomic
from kadcommon.manifest import SUFFIX, FileEntry, Manifest, ManifestError, sign
from kadcommon.merkle import file_id_of_bytes
from pserver.catalog import Catalog
from pserver.errors import PeerError

log = logging.getLogger(__name__)

FOLDERS_DIR = ".kadshare-folders"  # hidden: never scanned as ordinary files


def _visible_dirs(root: Path, private: Callable[[str], bool]) -> list[str]:
    """Relative POSIX paths of the visible, real (not linked) folders under ``root``,
    leaving out the data folder (``private``) and everything in it."""
    found: list[str] = []
    for dirpath, dirnames, _files in os.walk(root, followlinks=False):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".")
            and not os.path.islink(os.path.join(dirpath, d))
            and not private(os.path.realpath(os.path.join(dirpath, d))))
        for d in dirnames:
            found.append(os.path.relpath(os.path.join(dirpath, d), root).replace(os.sep, "/"))
    return found


class FolderSharer:
    """Keeps one manifest per top-level folder of the catalog's share folder."""

    def __init__(self, catalog: Catalog, public_key: bytes,
                 signer: Callable[[bytes], bytes]) -> None:
        self.catalog = catalog
        self.public_key = public_key
        self.signer = signer
        self._warned: set[str] = set()

    async def sync(self) -> bool:
        """Publish new or changed manifests, withdraw those of vanished folders; True if
        anything changed (the caller announces)."""
        share = self.catalog.share_dir
        if share is None:
            return False
        listing = await asyncio.to_thread(self.catalog.walk)
        dirs = await asyncio.to_thread(_visible_dirs, share, self.catalog.is_private)
        out = share / FOLDERS_DIR
        changed = False
        tops = [d for d in dirs if "/" not in d]
        for top in tops:
            data = self._manifest(top, listing, dirs)
            if data is None:
                continue
            path = out / f"{top}{SUFFIX}"
            if await asyncio.to_thread(_holds, path, data) and self._shared(data):
                continue
            await asyncio.to_thread(out.mkdir, exist_ok=True)
            await asyncio.to_thread(write_atomic, path, data)
            try:
                await self.catalog.share_path(path)
                changed = True
                log.info("sharing folder %s as %s", top, file_id_of_bytes(data)[:12])
            except PeerError as exc:
                self._warn(top, f"folder {top}: manifest not shared: {exc}")
        changed |= await self._withdraw(out, set(tops))
        return changed

    def _manifest(self, top: str, listing: list[tuple[str, str, os.stat_result]],
                  dirs: list[str]) -> bytes | None:
        prefix = top + "/"
        files = []
        for rel, real, st in listing:
            if not rel.startswith(prefix):
                continue
            file_id = self.catalog.id_if_hashed(real, st)
            if file_id is None:
                return None  # not hashed yet: publish the folder when it is complete
            files.append(FileEntry(rel[len(prefix):], st.st_size, file_id))
        subdirs = tuple(d[len(prefix):] for d in dirs if d.startswith(prefix))
        try:
            return sign(Manifest(top, tuple(files), subdirs), self.public_key, self.signer)
        except ManifestError as exc:
            self._warn(top, f"folder {top} is not shared as a unit: {exc}")
            return None

    def _shared(self, data: bytes) -> bool:
        file_id = file_id_of_bytes(data)
        return any(f.file_id == file_id for f in self.catalog.files())

    async def _withdraw(self, out: Path, tops: set[str]) -> bool:
        """Unshare and delete the manifests of folders that are gone."""
        try:
            names = await asyncio.to_thread(os.listdir, out)
        except OSError:
            return False
        changed = False
        for name in names:
            if not name.endswith(SUFFIX) or name[:-len(SUFFIX)] in tops:
                continue
            path = out / name
            real = Path(await asyncio.to_thread(os.path.realpath, path))
            for entry in self.catalog.files():
                if entry.path == real:  # entries hold real paths
                    await self.catalog.unshare(entry.file_id)
                    changed = True
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return changed

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False
