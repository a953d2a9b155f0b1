"""Running the Sanic REST app inside the peer's own asyncio loop.

Sanic normally owns the process (workers, signals); a peer runs it as one server among
several in one loop, which needs the socket bound by hand and the lifecycle events run
explicitly. That plumbing lives here so ``pserver.rest`` stays about routes and
``pserver.node`` about wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from sanic import Sanic

from pserver.config import NodeConfig
from pserver.rest import PeerApi, create_app

#: Seconds a stopping server waits for open connections to finish.
CLOSE_TIMEOUT = 5.0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class RestServer:
    """The REST app of one peer, listening; :meth:`start` then :meth:`stop`."""

    def __init__(self, app: Sanic, server: Any, port: int) -> None:
        self.app = app
        self.port = port
        self._server = server

    @classmethod
    async def start(cls, api: PeerApi, config: NodeConfig, name_hint: str) -> RestServer:
        """Bind ``rest_host:rest_port`` (0 picks a free port) and serve the REST app."""
        sock = _listen(config.rest_host, config.rest_port)
        app = create_app(api, config, name_hint=name_hint)
        try:
            server = await app.create_server(
                sock=sock, return_asyncio_server=True, access_log=False
            )
            if server is None:
                raise OSError("Sanic did not create a server")
            # create_server already awaited the listening server; run the lifecycle events.
            await server.startup()
            await server.before_start()
            await server.after_start()
        except BaseException:
            sock.close()
            with contextlib.suppress(Exception):
                Sanic.unregister_app(app)
            raise
        return cls(app, server, int(sock.getsockname()[1]))

    async def stop(self) -> None:
        """Close the listener and idle connections; never raises (it runs at stop)."""
        server = self._server
        with contextlib.suppress(Exception):
            await server.before_stop()
        server.close()
        for conn in list(server.connections):
            conn.close_if_idle()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
        with contextlib.suppress(Exception):
            await server.after_stop()
        with contextlib.suppress(Exception):
            Sanic.unregister_app(self.app)
