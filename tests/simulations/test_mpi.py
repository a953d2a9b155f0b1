"""Shards of one virtual-time simulation (simulations/mpi.py, simulations/sharded.py):
``mpirun -n 2`` must give the same digest as one process. Skipped, with the reason, when
MPI is not installed (CI installs only the `test` extra; MPI needs a system library and
the `mpi` extra)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.cli import main as sim_main
from simulations.mpi import Shard, main, run_workload

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


def _sim(cmd: list[str], out: Path) -> dict:
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


def _digest(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
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
