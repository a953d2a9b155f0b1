"""Shards of one virtual-time simulation (simulations/mpi.py, simulations/sharded.py):
``mpirun -n 2`` must give the same digest as one process. Skipped, with the reason, when
MPI is not installed (CI installs only the `test` extra; MPI needs a system library and
the `mpi` extra)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulations.churn import parse_session
from simulations.cli import main as sim_main
from simulations.config import SimConfig
from simulations.mpi import WAIT_ENV, Shard, main, run_workload
from simulations.runners.virtual import host_for
from simulations.scenarios import build_trace
from simulations.sharded import run_sharded

ARGS = ["-m", "simulations.mpi", "--nodes", "12", "--loss", "0.01", "--seed", "4"]
# A small churn run of the whole engine (joins, leaves, crashes, lookups) with loss.
SIM = ["run", "churn", "--nodes", "12", "--duration", "15", "--runner", "virtual",
       "--latency", "20-80ms", "--loss", "0.01", "--seed", "5", "--session", "exp:20", "-q"]
MPIRUN = ["mpirun", "-n", "2", "--oversubscribe", "--allow-run-as-root",
          "--mca", "mpi_yield_when_idle", "1"]
needs_mpi = [
    pytest.mark.skipif(shutil.which("mpirun") is None,
                       reason="mpirun not installed (apt-get install openmpi-bin libopenmpi-dev)"),
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                       reason="mpi4py not installed (pip install -e '.[mpi]')"),
]


def _env() -> dict[str, str]:
    # os.environ, not the process's C environment: once a test in this process has
    # initialised MPI (a singleton), Open MPI's setenv()s (OMPI_*, PMIX_*) are there and
    # a child mpirun inheriting them exits 1 without a word.
    return dict(os.environ)


def _sim(cmd: list[str], out: Path) -> dict:
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True,
                          timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


def _digest(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_one_shard_without_mpi_finds_every_file() -> None:
    res = run_workload(Shard(), nodes=8, seed=2)
    assert res is not None
    assert res["ranks"] == 1 and len(res["digest"]) == 64
    assert res["lookups_found"] == 8      # every node's lookup found a provider
    again = run_workload(Shard(), nodes=8, seed=2)
    assert again is not None and again["digest"] == res["digest"]


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "0"]) == 2
    assert main(["--latency", "0:0.1"]) == 2     # no window without a minimum latency
    assert "error" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("mpirun") is None,
                    reason="mpirun not installed (apt-get install openmpi-bin libopenmpi-dev)")
@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                    reason="mpi4py not installed (pip install -e '.[mpi]')")
def test_two_ranks_give_the_digest_of_one_process() -> None:
    one = _digest([sys.executable, *ARGS])
    two = _digest(["mpirun", "-n", "2", "--oversubscribe", "--allow-run-as-root",
                   "--mca", "mpi_yield_when_idle", "1", sys.executable, *ARGS])
    assert two["ranks"] == 2 and one["ranks"] == 1
    assert two["digest"] == one["digest"]
    assert two["delivered"] == one["delivered"] > 0


def test_ranks_without_mpi4py_are_refused(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)     # import mpi4py -> ImportError
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert main(["--nodes", "4"]) == 2
    assert "mpi4py is not installed" in capsys.readouterr().err


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("impl", ["kadshare", "kademlia"])
def test_two_ranks_run_the_engine_with_the_digest_of_one_process(
        impl: str, tmp_path: Path) -> None:
    sim = [sys.executable, "-m", "simulations.cli", *SIM, "--impl", impl]
    one = _sim([*sim, "--sharded"], tmp_path / "one")
    two = _sim([*MPIRUN, *sim], tmp_path / "two")
    assert two["digest"] == one["digest"]
    m = one["runs"][0]["metrics"]
    assert m["lookups"] > 0 and m["success"] > 0.5
    assert two["runs"][0]["traffic"] == one["runs"][0]["traffic"]


def test_sharded_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["run", "churn", "--nodes", "4", "--duration", "2", "-q", "--out", str(tmp_path)]
    assert sim_main([*base, "--runner", "virtual", "--sharded", "--impl", "tracker",
                     "--latency", "20ms"]) == 2
    assert "cannot be sharded" in capsys.readouterr().err
    assert sim_main([*base, "--runner", "virtual", "--sharded"]) == 2   # no latency
    assert "minimum --latency" in capsys.readouterr().err
    assert sim_main([*base, "--runner", "inproc", "--sharded"]) == 2
    assert "needs --runner virtual" in capsys.readouterr().err


def _direct_trace(impl: str, nodes: int = 30, duration: float = 20.0,
                  session: str = "exp:40") -> Any:
    cfg = SimConfig(scenario="churn", nodes=nodes, duration=duration, seed=6,
                    runner="virtual", impl=impl, latency=(0.02, 0.08),
                    session=parse_session(session),
                    warmup="direct", intervals="production", progress=False)
    return build_trace(cfg)


def test_sharded_direct_warmup_tables_do_not_depend_on_the_ranks(tmp_path: Path) -> None:
    # Each rank draws every initial node's table and keeps its own: the union over two
    # ranks is the one-rank set, contacts on the other rank included.
    from simulations.sharded import _ShardedEngine, _ShardLoop

    trace = _direct_trace("kadshare")
    tables = []
    for rank, size in ((0, 1), (0, 2), (1, 2)):
        loop = _ShardLoop()
        try:
            eng = _ShardedEngine(trace, "kadshare", tmp_path, Shard(rank, size), loop)
            tables.append(eng.direct_tables())
        finally:
            loop.close()
    one, r0, r1 = tables
    assert set(one) == {int(n["node"]) for n in trace.initial}
    assert set(r0) | set(r1) == set(one) and not set(r0) & set(r1)
    assert {**r0, **r1} == one
    assert all(len(t) >= 20 for t in one.values())
    on_rank1 = {host_for(j) for j in r1}
    assert all(any(addr[0] in on_rank1 for _, addr in t) for t in r0.values())


def test_one_shard_runs_the_direct_warmup(tmp_path: Path) -> None:
    out = run_sharded(_direct_trace("kadshare"), "kadshare", Shard(), workdir=tmp_path)
    assert out is not None
    m = out.summary
    assert m["join_failures"] == 0 and m["lookups_eligible"] >= 15, m
    assert m["success"] >= 0.9, m     # sessions of 40 s on average: heavy churn


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("impl", ["kadshare", "kademlia"])
def test_two_ranks_run_the_direct_warmup_with_the_digest_of_one_process(
        impl: str, tmp_path: Path) -> None:
    sim = [sys.executable, "-m", "simulations.cli", *SIM, "--impl", impl,
           "--warmup", "direct", "--intervals", "production"]
    one = _sim([*sim, "--sharded"], tmp_path / "one")
    two = _sim([*MPIRUN, *sim], tmp_path / "two")
    assert two["digest"] == one["digest"]
    m = one["runs"][0]["metrics"]
    assert m["join_failures"] == 0 and m["lookups"] > 0 and m["success"] > 0.5
    assert m["warmup_sim_s"] < 40          # no real joins: announces at 1 s, then 30 s
    assert one["config"]["warmup"] == "direct"


class _SplitShard(Shard):
    """One process whose gather hands the merge this rank's results split in two by
    node parity, odd nodes first, as two ranks would hand them (in the other order)."""

    def gather(self, obj: Any) -> list[Any] | None:
        def half(odd: int) -> dict[str, Any]:
            return {
                "nodes": {i: n for i, n in obj["nodes"].items() if i % 2 == odd},
                "lookups": [r for r in obj["lookups"] if r["node"] % 2 == odd],
                "skipped": obj["skipped"] if odd else 0,
                "samples": obj["samples"] if odd else [(s, 0, 0.0) for s, _, _ in
                                                       obj["samples"]],
                "traffic": obj["traffic"] if odd else {
                    "msgs": {}, "bytes": {}, "dropped": 0, "per_second": {}},
                "host": obj["host"]}
        return [half(1), half(0)]


def test_the_merge_does_not_depend_on_how_nodes_are_split(tmp_path: Path) -> None:
    from simulations.digest import HOST_FIELDS

    trace = _direct_trace("kadshare")
    whole = run_sharded(trace, "kadshare", Shard(), workdir=tmp_path / "a")
    split = run_sharded(trace, "kadshare", _SplitShard(), workdir=tmp_path / "b")
    assert whole is not None and split is not None
    strip = HOST_FIELDS

    def canon(o: Any) -> dict:
        return {"m": {k: v for k, v in o.summary.items() if k not in strip},
                "ts": o.timeseries, "lookups": o.lookups, "traffic": o.traffic}

    assert canon(split) == canon(whole)
    assert whole.summary["node_seconds"] > 0


def test_a_shard_timer_sees_its_own_time_even_a_fraction_of_a_ns_after_another() -> None:
    # asyncio batches timers due within 1 ns and shows them all the earliest one's
    # clock, so a node's reading would depend on which other nodes share its process.
    from simulations.sharded import _ShardLoop

    loop = _ShardLoop()
    seen: list[tuple[float, float]] = []
    try:
        t = loop.time() + 1.0
        for when in (t, t + 5e-10, t + 2.5e-9):
            loop.call_at(when, lambda w=when: seen.append((w, loop.time())))
        loop.call_at(t + 1.0, loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert len(seen) == 3 and all(w == now for w, now in seen)


@needs_mpi[0]
@needs_mpi[1]
def test_the_spinning_wait_gives_the_digest_of_one_process(tmp_path: Path) -> None:
    # The default wait is "poll" (the other mpirun tests); "spin" is one alltoall.
    sim = [sys.executable, "-m", "simulations.cli", *SIM, "--warmup", "direct"]
    one = _sim([*sim, "--sharded"], tmp_path / "one")
    env = {**_env(), WAIT_ENV: "spin"}
    proc = subprocess.run([*MPIRUN, *sim, "--out", str(tmp_path / "two")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["digest"] == one["digest"]
