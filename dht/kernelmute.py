"""Store floods dropped by the kernel: a classic BPF socket filter on the UDP socket.

Why: the rate limits (``dht.ratelimit``) drop a flooding sender's stores before they are
decoded, but each one still costs a trip through the event loop (a wake-up, a
``recvfrom``, a callback).  At 10,000 datagrams per second that work sits in front of
every honest request and multiplies the honest p99 (x5-x6 measured,
``benchmarks/flood_bench.py``).  A sender that keeps flooding past its budget is
therefore "kernel-muted" for a while: a socket filter (``SO_ATTACH_FILTER``, Linux, no
privilege needed) drops its *store* datagrams before they reach the process.  Its other
requests (lookups, pings) still pass, so a spoofed source address costs the real owner of
that address only its store budget at this node, as before.

Only IPv4 sockets on Linux without a network key (the key's MAC shifts the payload) use
the filter; elsewhere ``KernelMute.available`` is False and the userspace drop stays the
only defence.  The filter matches exact ``host:port`` pairs and holds a bounded number of
them; the program is rebuilt and re-attached (atomically, by the kernel) on every change.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import sys
from typing import Any

__all__ = ["KernelMute", "build_program"]

log = logging.getLogger(__name__)

SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
SO_DETACH_FILTER = 27
SKF_NET_OFF = 0xFFF00000  # -0x100000 as u32: loads relative to the IP header
UDP_HEADER = 8  # a UDP socket's filter sees the UDP header, then the payload
ACCEPT = 0xFFFFFFFF
MAX_SENDERS = 60  # a jump offset of classic BPF is 8 bits: 4 * 60 + 1 < 256
DROP = 0

# classic BPF opcodes (<linux/filter.h>)
LD_W_ABS = 0x20
LD_H_ABS = 0x28
LD_B_ABS = 0x30
LD_W_LEN = 0x80
JGE_K = 0x35
JEQ_K = 0x15
RET_K = 0x06


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog``: the program's length and a pointer to its instructions."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build_program(senders: list[tuple[str, int]], method_offset: int,
                  method_bytes: bytes) -> list[bytes]:
    """A filter that drops datagrams from one of ``senders`` (IPv4 host, port) whose
    payload holds ``method_bytes`` (7 bytes) at ``method_offset``; everything else passes.

    Layout: per sender ``ld src_ip; jeq ip ? next : skip; ldh src_port; jeq port ?
    check : skip``, then the payload check (a word, a half word and a byte), then
    ``ret 0`` (drop) / ``ret -1`` (pass).  The datagram's length is checked before any
    payload byte is loaded (an out-of-range load would end the program with a drop)."""
    if len(method_bytes) != 7:
        raise ValueError("method_bytes must be 7 bytes")
    if len(senders) > MAX_SENDERS:
        raise ValueError(f"at most {MAX_SENDERS} senders (8-bit jump offsets)")
    w0 = struct.unpack("!I", method_bytes[:4])[0]
    h1 = struct.unpack("!H", method_bytes[4:6])[0]
    b2 = method_bytes[6]
    per_sender = 4
    n = len(senders)
    prog: list[bytes] = []
    for i, (host, port) in enumerate(senders):
        ip = struct.unpack("!I", socket.inet_aton(host))[0]
        # a match jumps over the remaining senders and the pass-return to the check
        to_check = (n - i - 1) * per_sender + 1
        prog.append(_ins(LD_W_ABS, 0, 0, SKF_NET_OFF + 12))
        prog.append(_ins(JEQ_K, 0, 2, ip))
        prog.append(_ins(LD_H_ABS, 0, 0, 0))
        prog.append(_ins(JEQ_K, to_check, 0, port))
    # no sender matched: pass (jump over the payload check and the drop)
    prog.append(_ins(RET_K, 0, 0, ACCEPT))
    base = UDP_HEADER + method_offset
    prog.append(_ins(LD_W_LEN, 0, 0, 0))  # too short to hold the method: pass
    prog.append(_ins(JGE_K, 0, 7, base + len(method_bytes)))
    prog.append(_ins(LD_W_ABS, 0, 0, base))
    prog.append(_ins(JEQ_K, 0, 5, w0))
    prog.append(_ins(LD_H_ABS, 0, 0, base + 4))
    prog.append(_ins(JEQ_K, 0, 3, h1))
    prog.append(_ins(LD_B_ABS, 0, 0, base + 6))
    prog.append(_ins(JEQ_K, 0, 1, b2))
    prog.append(_ins(RET_K, 0, 0, DROP))
    prog.append(_ins(RET_K, 0, 0, ACCEPT))
    return prog


class KernelMute:
    """The socket filter of one UDP socket, rebuilt whenever the muted set changes."""

    def __init__(self, sock: Any, *, max_senders: int, method_offset: int,
                 method_bytes: bytes, enabled: bool = True) -> None:
        self.sock = sock
        self.max_senders = max_senders
        self.method_offset = method_offset
        self.method_bytes = method_bytes
        self.senders: list[tuple[str, int]] = []
        self.available = enabled and _supported(sock)

    def mute(self, addr: tuple[str, int]) -> bool:
        """Add ``addr`` to the filter; False if not possible (full, unsupported, IPv6)."""
        if not self.available or addr in self.senders or len(self.senders) >= self.max_senders:
            return False
        try:
            socket.inet_aton(addr[0])
        except OSError:
            return False
        return self._install(self.senders + [addr])

    def unmute(self, addr: tuple[str, int]) -> None:
        if addr in self.senders:
            self._install([s for s in self.senders if s != addr])

    def _install(self, senders: list[tuple[str, int]]) -> bool:
        try:
            if senders:
                prog = build_program(senders, self.method_offset, self.method_bytes)
                buf = ctypes.create_string_buffer(b"".join(prog))
                fprog = _SockFprog(len(prog), ctypes.addressof(buf))
                # the kernel copies the program during the call; buf need not outlive it
                self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
            elif self.senders:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        except OSError as exc:  # refused by this kernel: stop trying, keep the userspace drop
            self.available = False
            log.info("kernel mute unavailable (%s): store floods are dropped in userspace only",
                     exc)
            return False
        self.senders = senders
        return True


def _supported(sock: Any) -> bool:
    """A real IPv4 UDP socket on Linux (not the simulator's stand-in)."""
    if not sys.platform.startswith("linux"):
        return False
    family = getattr(sock, "family", None)
    kind = getattr(sock, "type", None)
    return family == socket.AF_INET and kind == socket.SOCK_DGRAM
