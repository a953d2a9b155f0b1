"""``HOST:PORT`` text: the one parser and formatter every kadshare package uses.

IPv6 literals are written in brackets (``[::1]:8468``) so the port is never ambiguous.
"""

from __future__ import annotations

import ipaddress

MAX_ADDRESS_LEN = 300  # a DNS name is at most 253 characters, plus brackets and port


class AddressError(ValueError):
    """Text that is not ``HOST:PORT``; the message says what is wrong."""


def parse_hostport(text: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; raise AddressError."""
    if not isinstance(text, str) or not text or len(text) > MAX_ADDRESS_LEN:
        raise AddressError(f"want HOST:PORT, got {text!r}")
    if any(c.isspace() for c in text):
        raise AddressError(f"want HOST:PORT without spaces, got {text!r}")
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise AddressError(f"write an IPv6 address in brackets, e.g. [::1]:8468, not {text!r}")
    if not sep or not host:
        raise AddressError(f"want HOST:PORT, got {text!r}")
    if not port_text.isascii() or not port_text.isdigit() or port_text != str(int(port_text)):
        raise AddressError(f"the port of {text!r} is not a number")
    port = int(port_text)
    lowest = 0 if allow_port_zero else 1
    if not lowest <= port <= 65535:
        raise AddressError(f"the port of {text!r} is outside {lowest}-65535")
    return host, port


def format_hostport(host: str, port: int) -> str:
    """``(host, port)`` -> ``"host:port"``, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
