"""A hand-driven UDP endpoint that speaks (or abuses) the kadshare datagram format.

Why: an attacker does not run our ``DhtNode``; it writes whatever bytes it likes. This
endpoint sends raw or crafted datagrams, waits for replies by message id, and answers
incoming requests with whatever the test wants (or not at all).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import msgpack

from dht.transport import ERROR, REQUEST, RESPONSE, decode_datagram, encode_datagram

Address = tuple[str, int]
Answer = Callable[[str, list, Address], Any]


class Stranger(asyncio.DatagramProtocol):
    """One UDP socket; ``answer(method, args, addr)`` returns a reply body or None."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answer = answer
        self.waiting: dict[bytes, asyncio.Future] = {}
        self.requests_seen: list[tuple[str, Address]] = []

    @classmethod
    async def open(cls, host: str = "127.0.0.1", answer: Answer | None = None) -> Stranger:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(answer), local_addr=(host, 0)
        )
        return proto

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            msg = decode_datagram(data)
        except ValueError:
            return
        if msg.kind in (RESPONSE, ERROR):
            fut = self.waiting.pop(msg.msg_id, None)
            if fut is not None and not fut.done():
                fut.set_result((msg.kind, msg.body))
            return
        assert msg.kind == REQUEST and msg.method is not None
        self.requests_seen.append((msg.method, (addr[0], addr[1])))
        if self.answer is not None:
            body = self.answer(msg.method, msg.body, (addr[0], addr[1]))
            if body is not None:
                self.send(encode_datagram(RESPONSE, msg.msg_id, body), addr)

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def request(self, addr: Address, method: str, args: list,
                      timeout: float = 5.0) -> tuple[int, Any] | None:
        """Send one request; return (kind, body) of the reply, or None on timeout."""
        msg_id = os.urandom(8)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = fut
        self.send(encode_datagram(REQUEST, msg_id, [method, args]), addr)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self.waiting.pop(msg_id, None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def raw_request(method: object, args: object, msg_id: bytes = b"\x00" * 8) -> bytes:
    """A request envelope around arbitrary method/args values (for fuzzing)."""
    return msgpack.packb([1, REQUEST, msg_id, [method, args]], use_bin_type=True)
