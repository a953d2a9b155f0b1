"""A bare UDP socket speaking the kadshare wire format, for transport tests."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from dht.transport import REQUEST, RESPONSE, Message, decode_datagram, encode_datagram


class RawPeer:
    """Sends hand-made datagrams and reads what comes back (bounded waits)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.node_id = os.urandom(20)

    @property
    def addr(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def request(self, method: str, args: list, to: tuple[str, int]) -> bytes:
        msg_id = os.urandom(8)
        self.send(encode_datagram(REQUEST, msg_id, [method, args]), to)
        return msg_id

    def respond(self, msg_id: bytes, body: Any, to: tuple[str, int]) -> None:
        self.send(encode_datagram(RESPONSE, msg_id, body), to)

    async def receive(self, timeout: float = 3.0) -> tuple[Message, tuple[str, int]] | None:
        loop = asyncio.get_running_loop()
        try:
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65536), timeout)
        except asyncio.TimeoutError:
            return None
        return decode_datagram(data), addr

    async def receive_reply(self, msg_id: bytes, timeout: float = 3.0) -> Message | None:
        """The reply to ``msg_id``, skipping requests the node sends us meanwhile."""
        for _ in range(20):
            got = await self.receive(timeout)
            if got is None:
                return None
            if got[0].msg_id == msg_id:
                return got[0]
        return None

    def close(self) -> None:
        self.sock.close()
