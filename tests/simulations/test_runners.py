"""The process and netns runners: real child processes, real namespaces, all cleaned up."""

from __future__ import annotations

import subprocess

import pytest

from simulations.config import SimConfig
from simulations.engine import run_trace
from simulations.runners.netns import NS_PREFIX, netns_available
from simulations.scenarios import build_trace


def _children() -> set[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                         timeout=10).stdout
    return {line.split()[0] for line in out.splitlines()
            if "simulations.runners.worker" in line or "pserver.cli" in line}


async def test_process_runner_real_kadshare_nodes_and_worker_baseline() -> None:
    before = _children()
    trace = build_trace(SimConfig(scenario="churn", nodes=6, duration=6, files=4,
                                  providers=2, lookup_rate=3, seed=3, runner="process"))
    kad = (await run_trace(trace, "kadshare")).summary
    assert kad["join_failures"] == 0
    assert kad["lookups_eligible"] >= 8
    assert kad["success"] >= 0.9, kad
    assert kad["msgs_per_lookup"] is None        # a real peer's datagrams are not visible
    tracker = (await run_trace(trace, "tracker")).summary
    assert tracker["success"] == 1.0, tracker
    assert _children() - before == set()


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(NS_PREFIX)}


async def test_netns_runner_one_namespace_per_node_and_cleanup() -> None:
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns runner unavailable: {why}")
    before = _namespaces()
    trace = build_trace(SimConfig(scenario="steady", nodes=5, duration=4, files=3,
                                  providers=2, lookup_rate=3, seed=4, runner="netns"))
    out = await run_trace(trace, "tracker")
    assert out.summary["success"] == 1.0, out.summary
    assert out.summary["join_failures"] == 0
    assert _namespaces() == before


def test_netns_without_root_exits_2_with_reason(tmp_path) -> None:
    """Run the real CLI as an unprivileged user (or as ourselves when not root)."""
    import os
    import shutil
    import sys
    from pathlib import Path

    sim = str(Path(sys.executable).with_name("kadshare-sim"))
    argv = [sim, "run", "steady", "--runner", "netns", "--nodes", "3", "--duration", "2",
            "--impl", "tracker", "--quiet", "--out", str(tmp_path / "out")]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root, and no setpriv to drop privileges with")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "need root" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
