"""The socket filter that kernel-mutes store floods (dht.kernelmute), on real sockets."""

from __future__ import annotations

import socket
import sys

import pytest

from dht.kernelmute import MAX_SENDERS, KernelMute, build_program
from dht.ratelimit import STORE_BYTES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="socket filters (SO_ATTACH_FILTER) are Linux only")


def udp(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(0.3)
    return s


def store_like(tail: bytes = b"") -> bytes:
    return b"\x94\x01\x00\xc4\x08" + b"\x00" * 8 + STORE_BYTES + tail  # method at byte 13


def arrives(sender: socket.socket, receiver: socket.socket, data: bytes) -> bool:
    sender.sendto(data, receiver.getsockname())
    try:
        return receiver.recvfrom(65536)[0] == data
    except TimeoutError:
        return False


def test_only_the_muted_senders_stores_are_dropped() -> None:
    receiver, flooder, other = udp(), udp(), udp("127.0.0.2")
    try:
        mute = KernelMute(receiver, max_senders=4, method_offset=13, method_bytes=STORE_BYTES)
        assert mute.available
        assert mute.mute(flooder.getsockname())
        assert not arrives(flooder, receiver, store_like(b"records"))
        ping = b"\x94\x01\x00\xc4\x08" + b"\x00" * 8 + b"\x92\xa4ping\x90"
        assert arrives(flooder, receiver, ping)  # its other requests still pass
        assert arrives(flooder, receiver, b"x")  # a short datagram is not cut
        assert arrives(other, receiver, store_like())  # another sender's stores pass
        assert mute.mute(other.getsockname()) and mute.senders == [
            flooder.getsockname(), other.getsockname()]
        assert not arrives(other, receiver, store_like())
        mute.unmute(flooder.getsockname())
        assert arrives(flooder, receiver, store_like())
        assert not arrives(other, receiver, store_like())
        mute.unmute(other.getsockname())
        assert arrives(other, receiver, store_like())
    finally:
        for s in (receiver, flooder, other):
            s.close()


def test_bounds_and_unsupported_sockets() -> None:
    receiver = udp()
    try:
        mute = KernelMute(receiver, max_senders=2, method_offset=13, method_bytes=STORE_BYTES)
        assert mute.mute(("127.0.0.1", 1)) and mute.mute(("127.0.0.1", 2))
        assert not mute.mute(("127.0.0.1", 3))  # full
        assert not mute.mute(("::1", 4))  # IPv6 is left to the userspace drop
    finally:
        receiver.close()
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        assert not KernelMute(v6, max_senders=2, method_offset=13,
                              method_bytes=STORE_BYTES).available
    finally:
        v6.close()
    with pytest.raises(ValueError):
        build_program([("127.0.0.1", p) for p in range(MAX_SENDERS + 1)], 13, STORE_BYTES)
