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
    # Only the harness's own children: workers, and peers whose folders are in a
    # kadshare-sim work dir (other suites may run kadshare-node at the same time).
    return {line.split()[0] for line in out.splitlines()
            if "simulations.runners.worker" in line
            or ("pserver.cli" in line and "kadshare-sim-" in line)}


async def test_process_runner_real_kadshare_nodes_and_worker_baseline() -> None:
    before = _children()
    trace = build_trace(SimConfig(scenario="churn", nodes=6, duration=6, files=4,
                                  providers=2, lookup_rate=3, seed=3, runner="process",
                                  fetch=True))
    kad = (await run_trace(trace, "kadshare")).summary
    assert kad["join_failures"] == 0
    assert kad["lookups_eligible"] >= 8
    assert kad["success"] >= 0.9, kad
    assert kad["msgs_per_lookup"] is None        # a real peer's datagrams are not visible
    # --fetch: found files really download over gRPC from the peers, hash-verified.
    assert kad["fetches"] >= 5 and kad["fetch_success"] >= 0.9, kad
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
    """Run the real CLI without the rights namespaces need: exit 2 and say why.

    As root, the child keeps uid 0 and may still read every folder (so the checkout may
    live anywhere, e.g. in a ``mktemp -d`` folder of mode 0700, as in CI) but loses every
    capability except reading files: it is root without the power to make namespaces."""
    import os
    import shutil
    import sys
    from pathlib import Path

    sim = str(Path(sys.executable).with_name("kadshare-sim"))
    argv = [sim, "run", "steady", "--runner", "netns", "--nodes", "3", "--duration", "2",
            "--impl", "tracker", "--quiet", "--out", str(tmp_path / "out")]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root, and no setpriv to drop capabilities with")
        keep = "-all,+dac_override,+dac_read_search"
        argv = ["setpriv", f"--bounding-set={keep}", "--inh-caps=-all", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "need root" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_ctrl_c_stops_the_run_and_leaves_no_children(tmp_path) -> None:
    """SIGINT while nodes run: exit 130, no worker process left behind."""
    import signal
    import sys
    import time
    from pathlib import Path

    sim = str(Path(sys.executable).with_name("kadshare-sim"))
    proc = subprocess.Popen(
        [sim, "run", "steady", "--runner", "process", "--impl", "tracker", "--nodes", "4",
         "--duration", "120", "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 90
        seen = ""
        while time.monotonic() < deadline and "[tracker/process]" not in seen:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "[tracker/process]" in seen, seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, err
    assert "cleaned up" in err
    # Workers are reaped before the harness exits; poll briefly for the kernel to agree.
    for _ in range(20):
        if not any("simulations.runners.worker" in line for line in subprocess.run(
                ["ps", "-eo", "args"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines() if str(tmp_path) in line or "tracker" in line):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("worker processes left behind")


async def test_process_runner_flash_crowd_fetches_swarm_and_verify() -> None:
    """``kadshare-sim run flash-crowd --fetch --crowd-size 4M --max-upload-rate 2M``
    in small: every crowd download completes, hash-verified (issue 12 item 3)."""
    before = _children()
    trace = build_trace(SimConfig(scenario="flash-crowd", nodes=4, duration=12, files=2,
                                  providers=1, lookup_rate=0, seed=5, runner="process",
                                  fetch=True, crowd_size=4 * 2**20, upload_rate=2 * 2**20,
                                  lookup_timeout=60))
    assert trace.files[0].size == 4 * 2**20
    kad = (await run_trace(trace, "kadshare")).summary
    assert kad["crowd_fetch_success"] == 1.0, kad
    assert _children() - before == set()
