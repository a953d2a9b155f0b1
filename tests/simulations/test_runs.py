"""Whole experiments on real loopback UDP, inproc runner, seconds long.

These check what a person running the harness would notice: the headline numbers of
each design in situations where the answer is known.
"""

from __future__ import annotations

from simulations.churn import parse_kill
from simulations.config import SimConfig
from simulations.engine import run_trace
from simulations.scenarios import Trace, build_trace

OVERLOADED_MS = 150.0


async def _run(trace: Trace, impl: str, attempts: int = 2) -> dict:
    """Run; once more if the harness loop itself was starved (other suites hogging the
    CPU delay every inproc node alike, which says nothing about the design)."""
    for attempt in range(attempts):
        summary = (await run_trace(trace, impl)).summary
        if summary["loop_lag_p50_ms"] < OVERLOADED_MS or attempt == attempts - 1:
            return summary
    raise AssertionError("unreachable")


async def test_steady_30_nodes_every_impl_finds_every_file() -> None:
    trace = build_trace(SimConfig(scenario="steady", nodes=30, duration=4, files=10,
                                  providers=3, lookup_rate=7, seed=11))
    for impl in ("kadshare", "kademlia", "tracker"):
        m = await _run(trace, impl)
        assert m["lookups_eligible"] >= 15, (impl, m)
        assert m["success"] == 1.0, (impl, m)
        assert m["join_failures"] == 0, (impl, m)


async def test_mass_failure_tracker_dies_kadshare_holds() -> None:
    cfg = SimConfig(scenario="mass-failure", nodes=30, duration=8, files=10, providers=3,
                    lookup_rate=6, seed=5, kill=parse_kill("0.3@3"),
                    kill_tracker=3.0)
    trace = build_trace(cfg)
    tracker = (await run_trace(trace, "tracker")).summary
    assert tracker["success_before_event"] == 1.0
    assert tracker["lookups_after_event"] >= 10
    assert tracker["success_after_event"] == 0.0
    kad = await _run(trace, "kadshare")
    assert kad["lookups_after_event"] >= 10
    assert kad["success"] >= 0.99, kad
    assert kad["success_after_event"] >= 0.99, kad


async def test_ten_providers_kadshare_complete_kademlia_last_writer_wins() -> None:
    trace = build_trace(SimConfig(scenario="steady", nodes=20, duration=4, files=2,
                                  providers=10, lookup_rate=4, seed=2, settle=3))
    kad = await _run(trace, "kadshare")
    assert kad["completeness"] == 1.0, kad
    plain = (await run_trace(trace, "kademlia")).summary
    assert plain["success"] == 1.0
    assert plain["completeness"] <= 0.2, plain


async def test_latency_model_delays_lookups_and_loss_is_counted() -> None:
    base = SimConfig(scenario="steady", nodes=12, duration=3, files=4, providers=2,
                     lookup_rate=5, seed=4, lookup_timeout=4)
    slow_trace = build_trace(base.with_changes(latency=(0.05, 0.05)))
    slow = (await run_trace(slow_trace, "tracker")).summary
    assert slow["success"] == 1.0
    assert slow["latency_p50_ms"] >= 95      # one request and one answer, 50 ms each way
    lossy = await run_trace(build_trace(base.with_changes(loss=0.3)), "tracker")
    assert lossy.traffic["dropped"] > 0
