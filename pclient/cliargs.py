"""Values of the `kadshare` command line, checked into what the commands need.

Each check turns a bad value into :class:`UsageError` with one line naming the flag, so
`kadshare` exits 2 with that line instead of a traceback.
"""

from __future__ import annotations

from kadcommon.addr import AddressError, format_hostport, parse_hostport
from kadcommon.units import parse_rate

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A well-formed command line with a value that makes no sense."""


def positive_int(value: str, flag: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"{flag} needs a whole number of at least 1, not {value!r}")
    return number


def positive_float(value: str, flag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise UsageError(f"{flag} needs a positive number of seconds, not {value!r}")
    return number


def rate(value: str | None, flag: str) -> int:
    """Bytes per second of a human rate (``20M``); None -> 0, no cap."""
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def address(value: str, flag: str) -> str:
    try:
        host, port = parse_hostport(value)
    except AddressError as exc:
        raise UsageError(f"{flag} needs HOST:PORT: {exc}") from exc
    return format_hostport(host, port)


def node_url(value: str) -> str:
    """``--node``: an http(s) URL, or HOST:PORT like every other address flag."""
    if "://" in value:
        if not value.startswith(("http://", "https://")):
            raise UsageError(f"--node needs http://HOST:PORT, https://... or HOST:PORT, "
                             f"not {value!r}")
        return value
    try:
        host, port = parse_hostport(value)
    except AddressError as exc:
        raise UsageError(f"--node needs http://HOST:PORT or HOST:PORT: {exc}") from exc
    return f"http://{format_hostport(host, port)}"
