"""Which files of the share folder may be shared, and which have stopped changing.

Two questions the catalog asks before it hashes anything, kept apart from its index:

* :func:`walk_share_folder` lists the shareable files: hidden names are skipped (upload
  and download temp files are hidden), links are followed only when they stay inside the
  folder, and the node's data folder is never listed, whatever the layout.
* :class:`SettleGate` holds back a file whose size or mtime changed within
  ``settle_seconds``, so a file still being copied in is hashed and announced once, at
  its final size, rather than at every size it passes through.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: (relative POSIX name inside the share folder, real path, stat) of one file.
Listed = tuple[str, str, os.stat_result]


def is_within(path: str, root: str) -> bool:
    """True when the (real, normalised) ``path`` is ``root`` or lies below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk_share_folder(
    root: str, is_private: Callable[[str], bool], warn_once: Callable[[str, str], None]
) -> list[Listed]:
    """List the shareable files below ``root`` (runs in a worker thread).

    ``warn_once(key, message)`` reports a skipped folder or link once per path, so a
    rescan every few seconds does not repeat it.
    """
    found: list[Listed] = []

    def unreadable(error: OSError) -> None:
        warn_once(str(error.filename), "cannot read folder %s; its files are not shared")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unreadable):
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue  # hidden folders are not shared
            full = os.path.join(dirpath, d)
            real = os.path.realpath(full)
            if is_private(real):
                continue  # the data folder: never shared, not even listed
            if os.path.islink(full):
                if not is_within(real, root):
                    warn_once(full, "%s is a folder link leaving the share folder; not shared")
                continue  # a link inside the folder: its files are listed already
            kept.append(d)
        dirnames[:] = kept
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue  # hidden files, upload and download temp files
            full = os.path.join(dirpath, fname)
            real = os.path.realpath(full)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if is_private(real):
                continue  # a link into the data folder (private key, token)
            if not is_within(real, root):
                warn_once(full, "%s is a link leaving the share folder; not shared")
                continue
            try:
                st = os.stat(real)
            except OSError:
                continue  # removed between listing and stat
            if not stat.S_ISREG(st.st_mode):
                continue
            if not os.access(real, os.R_OK):
                warn_once(full, "cannot read %s; not shared")
                continue
            found.append((rel, real, st))
    return found


class SettleGate:
    """Lets a listed file through once its size and mtime have held for a while.

    A file counts as settled when its mtime is ``settle_seconds`` old (files already
    there at start are shared at once), when a scan saw the same size and mtime that
    long ago, or when the caller knows it complete (``is_known``: already hashed at this
    size and mtime, a verified upload, a file the user asked to share).
    """

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        #: real path -> (size, mtime_ns, monotonic time first seen so) of unsettled files.
        self._waiting: dict[str, tuple[int, int, float]] = {}

    def __len__(self) -> int:
        """How many files wait for their size and mtime to settle."""
        return len(self._waiting)

    def waiting_paths(self) -> set[str]:
        return set(self._waiting)

    def settled(
        self, listing: list[Listed], is_known: Callable[[str, os.stat_result], bool]
    ) -> list[Listed]:
        """The files of ``listing`` that have settled; remembers the others."""
        if self.settle_seconds <= 0:
            return listing
        now_wall, now = time.time(), time.monotonic()
        ready: list[Listed] = []
        waiting: dict[str, tuple[int, int, float]] = {}
        for name, real, st in listing:
            if is_known(real, st):
                ready.append((name, real, st))
                continue
            seen = self._waiting.get(real)
            first = seen[2] if seen and seen[:2] == (st.st_size, st.st_mtime_ns) else now
            if now_wall - st.st_mtime >= self.settle_seconds or now - first >= self.settle_seconds:
                ready.append((name, real, st))
            else:
                waiting[real] = (st.st_size, st.st_mtime_ns, first)
                log.debug("%s is still changing; shared once it settles", name)
        self._waiting = waiting
        return ready
