"""Check the listening addresses before anything starts, so a clash names its flag.

Without this, a port in use surfaces deep inside grpc (after its C core has printed
its own error line) or asyncio, as ``[Errno 98]`` with no hint of which flag to change.
"""

from __future__ import annotations

import errno
import socket

from pserver.config import NodeConfig
from pserver.errors import ConfigError


def check_listen_addresses(config: NodeConfig) -> None:
    """Raise :class:`ConfigError` naming the flag whose address cannot be bound."""
    wanted = [
        ("--dht-port", "--host", config.host, config.dht_port, socket.SOCK_DGRAM),
        ("--grpc-port", "--host", config.host, config.grpc_port, socket.SOCK_STREAM),
        ("--rest-port", "--rest-host", config.rest_host, config.rest_port, socket.SOCK_STREAM),
    ]
    for port_flag, host_flag, host, port, kind in wanted:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, kind) as probe:
                if kind == socket.SOCK_STREAM:  # as the servers do: TIME_WAIT is no clash
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"{port_flag} {port} is already in use on {host}: stop what uses it, "
                    f"or pick another port ({port_flag} 0 picks a free one)"
                ) from None
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise ConfigError(f"{host_flag} {host} is not an address of this machine") from None
            if exc.errno == errno.EACCES:
                raise ConfigError(
                    f"{port_flag} {port} needs privileges on {host}: use a port above 1023"
                ) from None
            if isinstance(exc, socket.gaierror):
                raise ConfigError(f"{host_flag} {host!r} is not a valid address") from None
            raise
