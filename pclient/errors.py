"""Errors raised by the kadshare client, each with a sentence a person understands.

::

    ClientError                 base: anything the client could not do
    ├── NodeUnreachable         the REST node did not answer (URL + how to start one)
    ├── NodeError               the node answered with an error (bad id, bad query, 5xx)
    │   └── NoAnswer            the node's lookup got no answer from any peer (not "no match")
    ├── BadFileId               the argument is not a file id (a usage error: exit code 2)
    ├── NotFound                no such file / name on the node or network
    │   └── NoProviders         the file is known but nobody provides it now
    ├── AmbiguousName           a name matched several files (carries the candidates)
    ├── AmbiguousId             an id prefix matched several ids (carries the full ids)
    ├── DestinationError        destination not writable, disk full, or an existing file
    ├── TransferFailed          every source failed (carries one reason per source)
    │   └── ChecksumMismatch    bytes arrived but do not hash to the file id
    └── UploadFailed            the receiving peer refused or broke the upload

Lower-layer errors (``httpx``, ``grpc.aio.AioRpcError``, ``OSError``) are re-raised
``from exc`` so the cause stays in the traceback for ``--debug`` users.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every error the client reports; ``str()`` is the user-facing line."""


class BadFileId(ClientError):
    """The argument is not a 64-hex file id (a usage error: exit code 2)."""


class NodeUnreachable(ClientError):
    """The node's REST API could not be reached at ``url``."""

    def __init__(self, url: str, reason: str = "", *, how_to_start: bool = True) -> None:
        self.url = url
        self.reason = reason
        detail = f" ({reason})" if reason else ""
        hint = (" Start one with `kadshare-node --share DIR --rest-port 8000`, or point to a "
                "running node with --node URL or KADSHARE_NODE.") if how_to_start else ""
        super().__init__(f"cannot reach a kadshare node at {url}{detail}.{hint}")


class NodeError(ClientError):
    """The node answered, but with an error status."""

    def __init__(self, message: str, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


class NoAnswer(NodeError):
    """No peer answered the node's lookup: whether anything matches is unknown (503/504)."""


class NotFound(ClientError):
    """A file id or name is not known."""


class NoProviders(NotFound):
    """Nobody currently provides the file."""


class AmbiguousName(ClientError):
    """A name matched several files; ``candidates`` are search results (dicts)."""

    def __init__(self, name: str, candidates: list[dict[str, Any]]) -> None:
        self.name = name
        self.candidates = candidates
        super().__init__(
            f"{len(candidates)} files match {name!r}; run `kadshare get FILE_ID` "
            "with one of the ids listed"
        )


class AmbiguousId(ClientError):
    """An id prefix matched several files; ``candidates`` are ``{file_id, name}`` dicts."""

    def __init__(self, message: str, candidates: list[dict[str, Any]]) -> None:
        self.candidates = candidates
        super().__init__(message)


class DestinationError(ClientError):
    """The destination cannot take the file: not writable, disk full, or occupied."""


class TransferFailed(ClientError):
    """No source could deliver the file; ``reasons`` maps source address to why."""

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        self.reasons = dict(reasons or {})
        if self.reasons:
            detail = "; ".join(f"{src}: {why}" for src, why in self.reasons.items())
            message = f"{message} ({detail})"
        super().__init__(message)


class ChecksumMismatch(TransferFailed):
    """The assembled file does not hash to the requested id."""


class UploadFailed(ClientError):
    """The receiving peer refused the upload or the stream broke."""
