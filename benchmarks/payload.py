"""The file a transfer benchmark moves: random (incompressible) bytes in a share folder."""

from __future__ import annotations

import os
from pathlib import Path

from kadcommon.merkle import file_id_of_path


def write_random_file(path: Path, size: int) -> None:
    """``size`` random bytes at ``path``, written in 4 MiB blocks."""
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 4 * 1024 * 1024))
            fh.write(block)
            left -= len(block)


def shared_payload(share: Path, name: str, size_mib: int) -> tuple[Path, str]:
    """Create ``share`` with one random file of ``size_mib`` MiB; return its path and id."""
    share.mkdir(parents=True)
    src = share / name
    write_random_file(src, size_mib * 1024 * 1024)
    return src, file_id_of_path(src)
