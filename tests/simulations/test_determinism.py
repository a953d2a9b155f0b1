"""Same command and seed, same results: the virtual runner measures the protocol, not
the machine. Two separate ``kadshare-sim`` processes (different hash seeds), the second
with a CPU-burning process beside it, must write the same digest and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from simulations.digest import metrics_digest

ARGS = ["compare", "churn", "--runner", "virtual", "--impls", "kadshare,kademlia,tracker",
        "--nodes", "16", "--duration", "20", "--files", "6", "--providers", "2",
        "--lookup-rate", "3", "--session", "weibull:0.5,20", "--latency", "10-60ms",
        "--loss", "0.01", "--seed", "9", "--quiet"]


def _run(out: Path, hashseed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([sys.executable, "-m", "simulations.cli", *ARGS, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert f"digest {results['digest']}" in proc.stdout
    return results


def test_same_seed_same_digest_even_beside_a_cpu_burner(tmp_path: Path) -> None:
    quiet = _run(tmp_path / "quiet", "1")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = _run(tmp_path / "loaded", "2")
    finally:
        burner.kill()
        burner.wait(timeout=10)
    assert len(quiet["digest"]) == 64
    assert quiet["digest"] == metrics_digest(quiet)          # the field is what it says
    for a, b in zip(quiet["runs"], loaded["runs"], strict=True):
        assert a["metrics"]["lookups_eligible"] >= 10, a
        assert json.dumps(a["traffic"]) == json.dumps(b["traffic"])
    assert quiet["digest"] == loaded["digest"]
    # Churn happened (fewer node-seconds than 16 nodes x 20 s).
    assert quiet["runs"][0]["metrics"]["node_seconds"] < 16 * 20


def test_digest_ignores_host_fields_and_sees_metric_changes() -> None:
    results = {"seed": 1, "scenario": "steady", "config": {"nodes": 3, "progress": True},
               "trace_digest": "ab", "started": "t1",
               "runs": [{"impl": "kadshare", "runner": "virtual", "infra": {}, "marks": [],
                         "traffic": {}, "metrics": {"success": 1.0, "warmup_s": 1.5,
                                                    "harness_cpu_fraction": 0.3}}]}
    base = metrics_digest(results)
    results["started"] = "t2"
    results["config"]["progress"] = False
    results["runs"][0]["metrics"]["warmup_s"] = 9.0
    results["runs"][0]["metrics"]["harness_cpu_fraction"] = 0.9
    assert metrics_digest(results) == base
    results["runs"][0]["metrics"]["success"] = 0.99
    assert metrics_digest(results) != base
