"""Errors of the peer, one base per layer.

    PeerError
    ├── FileNotShared   unknown id, unshared, or changed on disk since hashing
    ├── InvalidFileId   not 64 hex characters
    ├── RangeError      offset at or past the end of the file
    ├── UploadRefused   uploads off, bad name, too large, wrong hash (carries a reason code)
    ├── ConfigError     bad option or unusable folder (the CLI turns it into exit 2)
    └── LookupUnavailable  nobody answered a DHT lookup, or it failed (REST: 503)
        └── LookupTimedOut the lookup outlasted its time (REST: 504)

The edges map them: REST handlers to HTTP statuses, the gRPC servicer to status codes.
"""

from __future__ import annotations


class PeerError(Exception):
    """Base of every error the peer raises on purpose."""


class FileNotShared(PeerError):
    """The file id is not shared by this peer (or no longer matches the bytes on disk)."""


class InvalidFileId(PeerError):
    """A file id that is not 64 hexadecimal characters."""


class RangeError(PeerError):
    """A requested byte range that starts at or after the end of the file."""


class UploadRefused(PeerError):
    """An upload this peer will not take; ``reason`` is one of the ``REASON_*`` values."""

    NOT_ACCEPTING = "not_accepting"
    NO_TOKEN = "no_token"
    BAD_TOKEN = "bad_token"
    BUSY = "busy"
    BAD_NAME = "bad_name"
    TOO_LARGE = "too_large"
    BAD_HASH = "bad_hash"
    BAD_STREAM = "bad_stream"
    EXISTS = "exists"
    STALLED = "stalled"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(PeerError):
    """An option or folder that makes the peer unable to start."""


class LookupUnavailable(PeerError):
    """A DHT lookup reached nobody or failed, so "no match" cannot be told apart."""


class LookupTimedOut(LookupUnavailable):
    """A DHT lookup outlasted ``lookup_timeout``."""
