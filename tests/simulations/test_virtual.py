"""The virtual runner: its clock, its in-memory network, and every impl running on it.

These tests are synchronous on purpose: each builds its own VirtualTimeLoop with
``run_virtual`` (pytest-asyncio's loop is a real one).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from simulations.config import SimConfig
from simulations.engine import run_trace
from simulations.netmodel import NetModel
from simulations.runners import RunnerUnavailable
from simulations.scenarios import build_trace
from simulations.vloop import EPOCH, START, VirtualTimeError, VirtualTimeLoop, run_virtual
from simulations.vnet import HEADER_BYTES, VirtualNetwork

mark = contextvars.ContextVar("mark", default="neutral")


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[float, bytes, Any, str]] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        loop = asyncio.get_running_loop()
        self.got.append((loop.time(), data, addr, mark.get()))


def test_an_hour_of_sleep_passes_in_virtual_time_and_wall_time_follows() -> None:
    async def main() -> tuple[float, float, float, float]:
        loop = asyncio.get_running_loop()
        t0, w0 = loop.time(), loop.wall_time()  # type: ignore[attr-defined]
        await asyncio.sleep(3600)
        await asyncio.wait_for(asyncio.sleep(5), timeout=7200)
        return t0, w0, loop.time(), loop.wall_time()  # type: ignore[attr-defined]

    t0, w0, t1, w1 = run_virtual(main())
    assert (t0, w0) == (START, EPOCH)
    assert t1 - t0 == pytest.approx(3605, abs=1e-6)
    assert w1 - w0 == pytest.approx(3605, abs=1e-6)


def test_threads_and_dns_names_are_errors_under_virtual_time() -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        out: list[Any] = []
        for coro in (asyncio.to_thread(sum, [1, 2]),
                     loop.getaddrinfo("example.invalid", 80)):
            try:
                out.append(await coro)
            except VirtualTimeError as exc:
                out.append(str(exc))
        out.append(await loop.getaddrinfo("10.1.2.3", 4000))
        return out

    thread, name, literal = run_virtual(main())
    assert "thread use under virtual time" in thread
    assert "only IP literals" in name
    assert literal[0][4][:2] == ("10.1.2.3", 4000)


class _Echo(_Sink):
    def datagram_received(self, data: bytes, addr: Any) -> None:
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


def test_datagrams_pay_uplink_latency_and_processing_in_a_neutral_context() -> None:
    model = NetModel(seed=1, latency=(0.05, 0.05))

    async def main() -> tuple[_Sink, _Echo, float]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        net = VirtualNetwork(loop, model, proc_delay=0.01, uplink_bps=1e6)
        loop.set_network(net)
        _, echo = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.1.2", 0))
        tx, sink = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.1.1", 0))
        mark.set("sender")   # the sender's context must not leak into the receiver
        t0 = loop.time()
        for _ in range(2):
            tx.sendto(b"x" * 972, echo.transport.get_extra_info("sockname"))
        tx.sendto(b"y", ("127.9.9.9", 1))    # nobody there: vanishes
        await asyncio.sleep(1)
        return sink, echo, t0

    sink, echo, t0 = run_virtual(main())
    wire = (972 + HEADER_BYTES) * 8 / 1e6          # 8 ms on a 1 Mbit/s uplink
    got = [round(t - t0, 6) for t, *_ in echo.got]
    back = [round(t - t0, 6) for t, *_ in sink.got]
    # Out: 8 ms uplink + 50 ms; the second queues 8 ms behind the first on the uplink
    # and then 2 ms more behind the echo's 10 ms of work on the first.
    assert got == [round(wire + 0.05, 6), round(wire + 0.05 + 0.01, 6)]
    # Back: each echo leaves when its 10 ms of work is done, then uplink and link again.
    assert back == [round(g + 0.01 + wire + 0.05, 6) for g in got]
    assert {m for *_, m in echo.got + sink.got} == {"neutral"}
    assert echo.got[0][2] == ("127.0.1.1", 4000)
    assert model.traffic.msgs["maintenance"] == 5


def test_the_virtual_runner_refuses_a_real_loop() -> None:
    trace = build_trace(SimConfig(scenario="steady", nodes=4, duration=2, files=2,
                                  providers=1, seed=1, runner="virtual", progress=False))
    with pytest.raises(RunnerUnavailable, match="virtual-time loop"):
        asyncio.run(run_trace(trace, "kadshare"))


@pytest.mark.parametrize("impl", ["kadshare", "kademlia", "tracker"])
def test_every_impl_runs_under_virtual_time(impl: str) -> None:
    trace = build_trace(SimConfig(scenario="steady", nodes=30, duration=10, files=8,
                                  providers=2, lookup_rate=4, seed=7, runner="virtual",
                                  latency=(0.01, 0.05), progress=False))
    out = run_virtual(run_trace(trace, impl))
    m = out.summary
    assert out.runner == "virtual"
    assert m["join_failures"] == 0, m
    assert m["lookups_eligible"] >= 25, m
    assert m["success"] == 1.0, m
    # Lookups that asked the network paid round trips of the 10-50 ms links (plain
    # kademlia answers many from its own storage: k = 20 copies among 30 nodes).
    assert m["latency_p99_ms"] >= 20, m
    assert m["msgs_per_lookup"] > 0, m
