"""Fetching a shared folder: its signed manifest, then every file, each verified.

The manifest (kadcommon.manifest) is a file like any other, so it comes through the
ordinary download path and is checked against the folder id; its paths are checked
again here before anything is written, and every target's real parent must lie inside
the output folder, so neither a hostile manifest nor a link planted in the output
folder can make a download write elsewhere. Each file resumes like a single ``get``
(its partial state sits beside it), so running the command again resumes the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

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
