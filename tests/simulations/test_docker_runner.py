"""The docker runner: one container of the kadshare image per node, churn included,
everything removed afterwards. Runs when a Docker daemon answers and the image exists
(``make image`` or ``make testnet`` leave it); KADSHARE_DOCKER_TESTS=0 always skips."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.config import SimConfig
from simulations.engine import run_trace
from simulations.impls import make_impl
from simulations.netmodel import NetModel
from simulations.runners import make_runner
from simulations.runners.docker import DockerRunner, docker_available
from simulations.scenarios import build_trace


def _leftovers() -> set[str]:
    """Names of containers and networks of simulation runs (labelled kadshare-sim)."""
    found = set()
    for cmd in (["ps", "-a", "--format", "{{.Names}}"], ["network", "ls", "--format", "{{.Name}}"]):
        out = subprocess.run(["docker", *cmd, "--filter", "label=kadshare-sim"],
                             capture_output=True, text=True, timeout=60).stdout
        found |= set(out.split())
    return found


def _skip_without_docker() -> None:
    if os.environ.get("KADSHARE_DOCKER_TESTS") == "0":
        pytest.skip("KADSHARE_DOCKER_TESTS=0")
    ok, why = docker_available()
    if not ok:
        pytest.skip(f"docker runner unavailable: {why}")


def _running(runner: DockerRunner) -> set[str]:
    out = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter",
                          f"network={runner.network}"], capture_output=True, text=True,
                         timeout=60).stdout
    return set(out.split())


async def test_real_peers_in_containers_find_what_others_share() -> None:
    _skip_without_docker()
    before = _leftovers()
    trace = build_trace(SimConfig(scenario="steady", nodes=5, duration=8, files=4,
                                  providers=2, lookup_rate=3, seed=5, runner="docker"))
    kad = (await run_trace(trace, "kadshare")).summary
    assert kad["join_failures"] == 0, kad
    # The same bar as the process runner's test: a lookup may time out on a busy machine.
    assert kad["lookups_eligible"] >= 8 and kad["success"] >= 0.9, kad
    churn = build_trace(SimConfig(scenario="churn", nodes=5, duration=10, files=4,
                                  providers=2, lookup_rate=3, seed=5, runner="docker"))
    tracker = (await run_trace(churn, "tracker")).summary  # workers in containers, churned
    assert churn.meta["nodes_total"] > 5 and tracker["alive_end"] < churn.meta["nodes_total"]
    assert tracker["join_failures"] == 0 and tracker["success"] == 1.0, tracker
    assert _leftovers() == before


async def test_a_crash_kills_the_container_and_a_leave_stops_it(tmp_path: Path) -> None:
    _skip_without_docker()
    cfg = SimConfig(scenario="steady", nodes=3, duration=5, seed=6, runner="docker")
    impl = make_impl("kadshare")
    runner = make_runner(cfg, impl, NetModel(seed=6), tmp_path)
    assert isinstance(runner, DockerRunner)
    await runner.start()
    try:
        first = await runner.spawn(0)
        await first.start([])
        second = await runner.spawn(1)
        await second.start([first.addr])
        names = {runner.container(0), runner.container(1)}
        assert _running(runner) == names
        first.crash()
        second_leaving = asyncio.create_task(second.leave())
        await asyncio.wait_for(second_leaving, 60)
        for _ in range(120):  # docker kill runs in the background: bounded wait
            if not _running(runner):
                break
            await asyncio.sleep(0.5)
        assert _running(runner) == set()
        # SIGTERM went through docker run and tini to the node, which left and exited 0.
        assert second.child is not None and second.child.proc.returncode == 0
    finally:
        await runner.close()
    assert not any(runner.network in item for item in _leftovers())


def test_without_docker_the_cli_exits_2_with_the_reason(tmp_path: Path) -> None:
    sim = str(Path(sys.executable).with_name("kadshare-sim"))
    env = {**os.environ, "PATH": str(tmp_path)}  # no docker client on this PATH
    argv = [sim, "run", "steady", "--runner", "docker", "--nodes", "3", "--duration", "2",
            "--quiet", "--out", str(tmp_path / "out")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=env)
    assert proc.returncode == 2, proc.stderr
    assert "docker" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
