"""Folders: fetching a shared one (its signed manifest, then every file, each verified),
and sending one to a peer that accepts uploads (``kadshare put DIR``).

The manifest (kadcommon.manifest) is a file like any other, so it comes through the
ordinary download path and is checked against the folder id; its paths are checked
again here before anything is written, and every target's real parent must lie inside
the output folder, so neither a hostile manifest nor a link planted in the output
folder can make a download write elsewhere. Each file resumes like a single ``get``
(its partial state sits beside it), so running the command again resumes the folder.

``put_folder`` sends every file as ``FOLDER/rel/path`` and each empty folder as
``FOLDER/rel/`` (the upload name contract, ``kadcommon.names``, checked here first so a
bad name stops the put before a byte is sent); the peer then shares the folder as a
unit, like every folder of its share folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kadcommon import names
from kadcommon.manifest import SUFFIX, Manifest, ManifestError, check_path, decode
from pclient.download import DownloadProgress, DownloadResult, ProgressCallback
from pclient.errors import ClientError

MANIFESTS_DIR = ".kadshare-manifests"

Fetch = Callable[[str, Path, str, ProgressCallback | None], Awaitable[DownloadResult]]
"""Downloads (file id, into folder, as name, progress): ``Client.download``, which looks
the providers up and checks each one's identity."""


class FolderError(ClientError):
    """The folder cannot be fetched as asked (bad manifest, unsafe path, ...)."""


def is_folder_name(name: str) -> bool:
    return name.endswith(SUFFIX)


@dataclass
class FolderResult:
    folder_id: str
    name: str
    path: Path
    size: int
    files: int
    fetched_bytes: int = 0
    already_present: int = 0
    sources: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, object]:
        return {"folder_id": self.folder_id, "name": self.name, "path": str(self.path),
                "size": self.size, "files": self.files, "fetched_bytes": self.fetched_bytes,
                "already_present": self.already_present, "sources": sorted(self.sources)}


def _inside(path: Path, root: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _prepare(out: Path, manifest: Manifest) -> Path:
    """Create the folder tree; refuse any path that would leave ``out`` (worker thread)."""
    check_path(manifest.name)
    root = out / manifest.name
    root.mkdir(parents=True, exist_ok=True)
    for rel in [*manifest.dirs, *(os.path.dirname(f.path) for f in manifest.files)]:
        if not rel:
            continue
        target = root.joinpath(*check_path(rel))
        target.mkdir(parents=True, exist_ok=True)
        if not _inside(target, root):
            raise FolderError(f"{rel!r} would lie outside {root} (a link in the way?)")
    if not _inside(root, out):
        raise FolderError(f"{root} is not inside {out} (a link in the way?)")
    return root


async def get_folder(folder_id: str, out: str | os.PathLike[str], fetch: Fetch, *,
                     progress: ProgressCallback | None = None) -> FolderResult:
    """Fetch folder ``folder_id`` into ``out``/<folder name>; returns what was done."""
    out_dir = Path(out)
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    holder = out_dir / MANIFESTS_DIR
    await asyncio.to_thread(holder.mkdir, exist_ok=True)
    got = await fetch(folder_id, holder, f"{folder_id}{SUFFIX}", None)
    try:
        manifest = decode(await asyncio.to_thread(got.path.read_bytes))
        root = await asyncio.to_thread(_prepare, out_dir, manifest)
    except ManifestError as exc:
        raise FolderError(f"folder {folder_id[:16]}… refused: {exc}") from None
    except OSError as exc:
        raise FolderError(f"cannot create the folder in {out_dir}: {exc}") from None
    result = FolderResult(folder_id, manifest.name, root, manifest.total_size,
                          len(manifest.files))
    base = 0

    def report(p: DownloadProgress) -> None:
        if progress is not None:
            progress(DownloadProgress(manifest.name, manifest.total_size, base + p.done,
                                      p.fetched, p.resumed, p.active_sources))

    for entry in sorted(manifest.files, key=lambda f: f.path):
        target = root.joinpath(*check_path(entry.path))
        done = await fetch(entry.file_id, target.parent, target.name, report)
        if done.path != target:
            raise FolderError(f"{entry.path} was saved as {done.path}, not {target}")
        base += entry.size
        result.fetched_bytes += done.fetched_bytes
        result.already_present += done.already_present
        result.sources.update(done.sources)
        report(DownloadProgress(manifest.name, manifest.total_size, 0, 0, 0, 0))
    await asyncio.to_thread(got.path.unlink, missing_ok=True)
    with contextlib.suppress(OSError):
        await asyncio.to_thread(holder.rmdir)  # only when empty
    return result


# ---- kadshare put DIR ------------------------------------------------------------

Upload = Callable[[Path, str, Callable[[int, int], None] | None], Awaitable[dict[str, Any]]]
"""Uploads (local path, upload name, progress(sent, total)): ``upload_file`` bound to a
peer, token and dialer. A name ending in ``/`` creates a folder (the path is not read)."""


@dataclass
class FolderPlan:
    """What ``put DIR`` sends: files as (upload name, path, size), folders to create
    (names ending in ``/``) and what is left out (hidden entries, links, specials)."""

    name: str
    files: list[tuple[str, Path, int]]
    folders: list[str]
    skipped: list[str]

    @property
    def size(self) -> int:
        return sum(size for _name, _path, size in self.files)


def plan_folder(root: Path, name: str | None = None) -> FolderPlan:
    """Walk ``root`` (worker thread) and check every name the way the peer will
    (``kadcommon.names``), so a bad name stops the put before any byte is sent."""
    top = name or root.resolve().name
    try:
        names.check_part(top, "folder name")
    except names.UnsafeName as exc:
        raise FolderError(f"{exc} (give another with --name)") from None
    plan = FolderPlan(top, [], [], [])
    folded: dict[str, str] = {}
    has_files: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for entry in sorted(dirnames):
            full = os.path.join(dirpath, entry)
            if entry.startswith(".") or os.path.islink(full):
                plan.skipped.append(prefix + entry + "/")
            else:
                kept.append(entry)
                plan.folders.append(f"{top}/{prefix}{entry}/")
        dirnames[:] = kept
        for entry in sorted(filenames):
            full = os.path.join(dirpath, entry)
            st = os.lstat(full)
            if entry.startswith(".") or not stat.S_ISREG(st.st_mode):
                plan.skipped.append(prefix + entry)
                continue
            plan.files.append((f"{top}/{prefix}{entry}", Path(full), st.st_size))
            has_files.update(_ancestors(f"{top}/{prefix}{entry}"))
    for upload_name in [*plan.folders, *(f for f, _p, _s in plan.files)]:
        path = upload_name.rstrip("/")
        try:
            names.check_path(path, "name")
        except names.UnsafeName as exc:
            raise FolderError(f"{exc}: rename it, or move it out of {root}") from None
        key = names.case_key(path)
        if key in folded:
            raise FolderError(f"{folded[key]!r} and {path!r} differ only by case: the peer "
                              "could not keep both; rename one")
        folded[key] = path
    # folders holding a file are created by that file's upload; the others are sent
    plan.folders = [f for f in plan.folders if f.rstrip("/") not in has_files]
    if not plan.files and not plan.folders:
        plan.folders.append(top + "/")
    return plan


def _ancestors(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:i]) for i in range(1, len(parts))}


async def put_folder(root: str | os.PathLike[str], upload: Upload, *,
                     name: str | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Upload the folder ``root`` as ``name`` (default: its own name), file by file, each
    verified by the peer; a file already there with the same bytes is not sent again,
    so running the command again resumes. One ``progress(sent, total)`` for the folder."""
    src = Path(root)
    try:
        plan = await asyncio.to_thread(plan_folder, src, name)
    except OSError as exc:
        raise FolderError(f"cannot read {src}: {(exc.strerror or str(exc)).lower()}") from None
    total, base = plan.size, 0

    def report(sent: int, _size: int) -> None:
        if progress is not None:
            progress(base + sent, total)

    for folder in plan.folders:
        await upload(src, folder, None)
    file_ids: dict[str, str] = {}
    for upload_name, path, size in plan.files:
        reply = await upload(path, upload_name, report)
        file_ids[upload_name] = str(reply["file_id"])
        base += size
        report(0, total)
    return {"name": plan.name, "files": len(plan.files), "size": total,
            "folders": len(plan.folders), "skipped": plan.skipped,
            "shared_as": plan.name + SUFFIX, "file_ids": file_ids}
