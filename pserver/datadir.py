"""The data folder: atomic msgpack files, the token, the single-run lock, stale temps."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import msgpack

from kadcommon.atomic import write_atomic
from pserver.errors import ConfigError

log = logging.getLogger(__name__)


def remove_stale_temps(folder: Path) -> None:
    """Delete temporary files ``write_atomic`` left behind when a run was killed mid-write."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            try:
                os.unlink(folder / name)
            except OSError:
                pass


def save_msgpack(path: Path, value: Any) -> None:
    """Atomically store ``value`` as msgpack (never pickle)."""
    write_atomic(path, msgpack.packb(value, use_bin_type=True))


def load_msgpack(path: Path, default: Any) -> Any:
    """Load a msgpack file, or ``default`` when missing or unreadable (logged once)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    except OSError as exc:
        log.warning("cannot read %s (%s); starting without it", path, exc)
        return default
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # a corrupt file must not stop the peer
        log.warning("ignoring corrupt %s (%s)", path, exc)
        return default


def load_or_create_token(path: Path) -> str:
    """Return the REST write token, creating it with mode 0600 the first time."""
    try:
        token = path.read_text(encoding="ascii").strip()
        if token and all(33 <= ord(c) < 127 for c in token):  # usable in a header
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return token
        if token:
            log.warning("token file %s is damaged; writing a new token", path)
    except FileNotFoundError:
        pass
    except UnicodeDecodeError:
        log.warning("token file %s is damaged; writing a new token", path)
    token = secrets.token_urlsafe(32)
    write_atomic(path, (token + "\n").encode(), mode=0o600)
    return token


class DataDirLock:
    """An exclusive ``flock`` on ``DATA/lock``: two peers on one data folder would clash."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise ConfigError(f"data folder {self._path.parent} is used by another peer") from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
