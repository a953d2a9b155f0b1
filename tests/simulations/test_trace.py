"""Traces: same seed, same experiment; specs fail with a sentence, not a traceback."""

from __future__ import annotations

import random

import pytest

from simulations.churn import SpecError, parse_kill, parse_session
from simulations.config import SimConfig, parse_latency
from simulations.scenarios import Trace, TraceError, build_trace


@pytest.mark.parametrize("scenario", ["steady", "churn", "mass-failure", "flash-crowd"])
def test_same_seed_gives_identical_trace(scenario: str) -> None:
    cfg = SimConfig(scenario=scenario, nodes=40, duration=60, seed=7)
    a, b = build_trace(cfg), build_trace(cfg)
    assert a.to_json() == b.to_json()
    assert a.digest() == b.digest()
    assert build_trace(cfg.with_changes(seed=8)).digest() != a.digest()


def test_trace_save_and_replay_roundtrip(tmp_path) -> None:
    trace = build_trace(SimConfig(scenario="churn", nodes=20, duration=30, seed=3))
    path = tmp_path / "trace.json"
    trace.save(path)
    again = Trace.load(path)
    assert again.digest() == trace.digest()
    assert again.events == trace.events


def test_broken_trace_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"version": 1, "config": {}}')
    with pytest.raises(TraceError):
        Trace.load(path)
    path.write_text("not json")
    with pytest.raises(TraceError):
        Trace.load(path)


def test_churn_keeps_population_near_n() -> None:
    trace = build_trace(SimConfig(scenario="churn", nodes=50, duration=120, seed=1))
    alive = 50
    lowest = alive
    for e in trace.events:
        if e["op"] in ("leave", "crash"):
            alive -= 1
        elif e["op"] == "join":
            alive += 1
        lowest = min(lowest, alive)
    departures = sum(e["op"] in ("leave", "crash") for e in trace.events)
    assert departures > 20            # it does churn
    assert lowest >= 40 and alive <= 50


def test_mass_failure_kills_the_fraction_at_once() -> None:
    cfg = SimConfig(scenario="mass-failure", nodes=40, duration=30, kill=parse_kill("0.25@10"))
    crashes = [e for e in build_trace(cfg).events if e["op"] == "crash"]
    assert len(crashes) == 10 and {e["t"] for e in crashes} == {10.0}


def test_flash_crowd_joins_half_and_looks_up_one_file() -> None:
    trace = build_trace(SimConfig(scenario="flash-crowd", nodes=20, duration=30))
    crowd = [e for e in trace.events if e.get("crowd")]
    assert len(crowd) == 10 and {e["file"] for e in crowd} == {0}


def test_session_distributions_are_heavy_tailed_as_specified() -> None:
    rng = random.Random(1)
    weib = parse_session("weibull:0.5,60")
    xs = sorted(weib.sample(rng) for _ in range(4000))
    median = xs[len(xs) // 2]
    assert 20 < median < 40           # 60 * ln2^(1/0.5) = 28.8 s
    assert sum(xs) / len(xs) > 2 * median   # mean far above median: heavy tail
    assert parse_session("exp:10").mean() == 10
    assert parse_session("pareto:2,5").mean() == 10


@pytest.mark.parametrize("spec", ["weibull:0.5", "exp:-1", "pareto:a,b", "gauss:1", "x"])
def test_bad_session_spec(spec: str) -> None:
    with pytest.raises(SpecError):
        parse_session(spec)


@pytest.mark.parametrize("spec", ["0.5", "2@3", "x@y", "0.5@-1"])
def test_bad_kill_spec(spec: str) -> None:
    with pytest.raises(SpecError):
        parse_kill(spec)


def test_latency_spec() -> None:
    assert parse_latency("20-80ms") == pytest.approx((0.02, 0.08))
    assert parse_latency("0ms") == (0.0, 0.0)
    with pytest.raises(SpecError):
        parse_latency("80-20ms")
