"""Shards of one virtual-time simulation (simulations/mpi.py): ``mpirun -n 2`` must give
the same digest as one process. Skipped, with the reason, when MPI is not installed
(CI installs only the `test` extra; MPI needs a system library and the `mpi` extra)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from simulations.mpi import Shard, main, run_workload

ARGS = ["-m", "simulations.mpi", "--nodes", "12", "--loss", "0.01", "--seed", "4"]


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
