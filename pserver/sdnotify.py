"""systemd readiness: tell a ``Type=notify`` service manager when the node is up or leaving.

systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket path, ``@`` for the abstract
namespace) and waits for ``READY=1`` before it counts the unit as started, so units
ordered after ``kadshare-node.service`` only start once the three listeners answer. The
protocol is one datagram of ``KEY=VALUE`` lines (sd_notify(3)); sending it needs no
library. Without ``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; True when it was sent.

    A failure is logged and ignored: a node that cannot report readiness still serves.
    """
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):
        address = "\0" + path[1:]
    elif path.startswith("/"):
        address = path
    else:  # vsock:... and other schemes are not used by systemd on a host
        log.warning("NOTIFY_SOCKET %r is not a unix socket path; not notifying", path)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", path, exc)
        return False
    return True
