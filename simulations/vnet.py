"""An in-memory datagram network for the virtual-time loop.

Every endpoint a node opens (``loop.create_datagram_endpoint``) becomes a
``VirtualDatagramTransport`` bound to a virtual ``host:port``. A datagram sent from A
to B goes through, in virtual time:

1. A's **uplink**: datagrams leave one after another, each taking
   ``(len + 28) * 8 / uplink_bps`` seconds (28 = IPv4 + UDP headers); 0 = unlimited;
2. the **link**: the NetModel's seeded per-pair one-way delay, and its i.i.d. loss;
3. B's **processing**: B handles datagrams one at a time, ``proc_delay`` seconds each,
   so a busy node (the tracker, a popular DHT node) queues work as a real one would.
   The handler runs when B's CPU takes the datagram up, and whatever it sends leaves
   when that work is done (``proc_delay`` later): one timer per datagram while B is
   idle, which keeps the loop's timer heap small at 10,000 nodes.

Then ``B.protocol.datagram_received`` runs in one neutral ``contextvars`` context taken
when the network was created, never in the sender's: the harness attributes datagrams
to a lookup through context variables, and a reply delivered in the asker's context
would be counted as the asker's own traffic.

A datagram to an address nobody is bound to vanishes, as unconnected UDP does on Linux.
Counting (traffic tags, per-lookup counters) is done by the NetModel's ``Traffic`` at
send time, in the sender's context, exactly as in the real-socket runners.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from simulations.netmodel import NetModel, traffic_tag

log = logging.getLogger(__name__)

__all__ = ["VirtualNetwork", "VirtualDatagramTransport", "MAX_DATAGRAM", "HEADER_BYTES"]

MAX_DATAGRAM = 65507       # largest UDP payload over IPv4, as the kernel enforces
HEADER_BYTES = 28
FIRST_PORT = 4000


class _NoSocket:
    """What ``get_extra_info("socket")`` returns: socket options are accepted and ignored
    (there is no kernel buffer to size)."""

    def setsockopt(self, *args: Any) -> None:
        return None

    def getsockopt(self, *args: Any) -> int:
        return 0


class VirtualDatagramTransport(asyncio.DatagramTransport):
    """One bound virtual UDP endpoint."""

    def __init__(self, net: VirtualNetwork, addr: tuple[str, int], protocol: Any,
                 remote: tuple[str, int] | None) -> None:
        super().__init__()
        self._net = net
        self.addr = addr
        self.name = f"{addr[0]}:{addr[1]}"
        self._protocol = protocol
        self._remote = remote
        self._closing = False
        self.uplink_free = 0.0      # virtual time the uplink is next idle
        self.cpu_free = 0.0         # virtual time the node can next handle a datagram

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self.addr
        if name == "peername":
            return self._remote
        if name == "socket":
            return _NoSocket()
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._net._unbind(self)
        self._net.loop.call_soon(self._protocol.connection_lost, None,
                                 context=self._net.context)

    def abort(self) -> None:
        self.close()

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return          # a stopped node's late answer never leaves
        if addr is None:
            addr = self._remote
        if addr is None:
            raise ValueError("sendto needs an address on an unconnected endpoint")
        if len(data) > MAX_DATAGRAM:
            raise OSError(90, "Message too long")
        self._net.send(self, bytes(data), (str(addr[0]), int(addr[1])))


class VirtualNetwork:
    """All virtual endpoints of one simulation, and the delivery of datagrams."""

    def __init__(self, loop: asyncio.AbstractEventLoop, model: NetModel, *,
                 proc_delay: float = 0.0, uplink_bps: float = 0.0) -> None:
        self.loop = loop
        self.model = model
        self.proc_delay = proc_delay
        self.uplink_bps = uplink_bps
        self.context = contextvars.copy_context()   # neutral: no lookup's counters
        self._bound: dict[tuple[str, int], VirtualDatagramTransport] = {}
        self._next_port: dict[str, int] = {}
        self.delivered = 0
        self.undeliverable = 0

    # -- binding ---------------------------------------------------------------------
    def _free_port(self, host: str) -> int:
        port = self._next_port.get(host, FIRST_PORT)
        for _ in range(65536):
            if port > 65535:
                port = 1024
            if (host, port) not in self._bound:
                self._next_port[host] = port + 1
                return port
            port += 1
        raise OSError(98, f"no free virtual port on {host}")

    def create_endpoint(self, protocol_factory: Any, local_addr: Any,
                        remote_addr: Any) -> tuple[VirtualDatagramTransport, Any]:
        """Bind ``local_addr`` (port 0 = pick one) and connect the protocol to it."""
        host, port = ("127.0.0.1", 0) if local_addr is None else (str(local_addr[0]),
                                                                    int(local_addr[1]))
        if port == 0:
            port = self._free_port(host)
        elif (host, port) in self._bound:
            raise OSError(98, f"virtual address {host}:{port} already in use")
        remote = None if remote_addr is None else (str(remote_addr[0]), int(remote_addr[1]))
        protocol = protocol_factory()
        transport = VirtualDatagramTransport(self, (host, port), protocol, remote)
        self._bound[(host, port)] = transport
        self.context.run(protocol.connection_made, transport)
        return transport, protocol

    def _unbind(self, transport: VirtualDatagramTransport) -> None:
        if self._bound.get(transport.addr) is transport:
            del self._bound[transport.addr]

    # -- the path of a datagram ------------------------------------------------------
    def send(self, src: VirtualDatagramTransport, data: bytes, dst: tuple[str, int]) -> None:
        """Count it (sender's context), then queue it on the uplink and the link."""
        model, now = self.model, self.loop.time()
        model.traffic.count(traffic_tag.get(), len(data), now)
        if model.loss > 0 and model.draw_loss():
            model.traffic.dropped += 1
            return
        arrive = self.arrival_time(src, len(data), dst, now)
        self.loop.call_at(arrive, self._arrive, data, src.addr, dst, context=self.context)

    def arrival_time(self, src: VirtualDatagramTransport, size: int, dst: tuple[str, int],
                     now: float) -> float:
        """When ``size`` bytes sent at ``now`` reach ``dst``; books the sender's uplink."""
        # Nothing leaves before the sender's CPU has finished the work that produced it.
        leave = max(now, src.cpu_free)
        if self.uplink_bps > 0:
            leave = max(leave, src.uplink_free) + (size + HEADER_BYTES) * 8 / self.uplink_bps
            src.uplink_free = leave
        return leave + self.model.delay(src.name, f"{dst[0]}:{dst[1]}")

    def context_for(self, dst: tuple[str, int]) -> contextvars.Context:
        """The context a datagram for ``dst`` is handled in (one neutral context here)."""
        return self.context

    def _arrive(self, data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
        target = self._bound.get(dst)
        if target is None:
            self.undeliverable += 1
            return
        now = self.loop.time()
        if target.cpu_free <= now:      # idle: handle now, busy for proc_delay from now
            target.cpu_free = now + self.proc_delay
            self._handle(target, data, src)
            return
        start = target.cpu_free         # busy: wait for the datagrams ahead of this one
        target.cpu_free = start + self.proc_delay
        self.loop.call_at(start, self._handle, target, data, src, context=self.context_for(dst))

    def _handle(self, target: VirtualDatagramTransport, data: bytes,
                src: tuple[str, int]) -> None:
        if target.is_closing():
            return
        self.delivered += 1
        try:
            target.get_protocol().datagram_received(data, src)
        except Exception:   # a node's bug must not stop the simulation; asyncio would log it
            log.exception("datagram_received of %s raised", target.name)
