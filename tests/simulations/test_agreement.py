"""Agreement with reality: one trace on the virtual runner and on real peers.

The same steady trace (production intervals, as real ``kadshare-node`` peers use)
runs virtual, on real ``kadshare-node`` processes (``process``) and on real loopback
UDP in one process (``inproc``). Success must agree within 1 point with the real
peers; messages per lookup within 10 % of real UDP (a real peer's own datagrams are
not visible to the harness, so that figure comes from ``inproc``, same node code).
"""

from __future__ import annotations

import asyncio
import dataclasses

from simulations.config import SimConfig
from simulations.engine import run_trace
from simulations.scenarios import Trace, build_trace
from simulations.vloop import run_virtual

CFG = SimConfig(scenario="steady", nodes=16, duration=8, files=6, providers=2,
                lookup_rate=4, seed=3, intervals="production", progress=False)


def _on(trace: Trace, runner: str) -> Trace:
    return dataclasses.replace(trace, config=trace.config.with_changes(runner=runner))


def test_virtual_agrees_with_real_peers_on_success_and_messages() -> None:
    trace = build_trace(CFG)
    virtual = run_virtual(run_trace(_on(trace, "virtual"), "kadshare")).summary
    real = asyncio.run(run_trace(_on(trace, "process"), "kadshare")).summary
    udp = asyncio.run(run_trace(_on(trace, "inproc"), "kadshare")).summary
    assert virtual["lookups_eligible"] == real["lookups_eligible"] >= 25
    assert real["join_failures"] == virtual["join_failures"] == 0
    assert abs(virtual["success"] - real["success"]) <= 0.01, (virtual, real)
    ratio = virtual["msgs_per_lookup"] / udp["msgs_per_lookup"]
    assert 0.9 <= ratio <= 1.1, (virtual["msgs_per_lookup"], udp["msgs_per_lookup"])
