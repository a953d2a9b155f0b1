"""kadshare-sim as a user runs it: outputs exist and parse; bad input exits 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from simulations.cli import main
from simulations.plots import PLOT_FILES


def test_compare_writes_results_timeseries_plots_and_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    code = main(["compare", "steady", "--nodes", "12", "--duration", "4",
                 "--impls", "tracker,kademlia", "--kill-tracker", "2",
                 "--files", "4", "--seed", "9", "--lookup-timeout", "3", "--quiet",
                 "--out", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "| tracker |" in table and "| kademlia |" in table
    results = json.loads((out / "results.json").read_text())
    assert results["seed"] == 9 and results["scenario"] == "steady"
    assert results["command"][:3] == ["kadshare-sim", "compare", "steady"]
    assert results["runs"][0]["marks"] == [{"t": 2.0, "label": "tracker killed"}]
    assert results["versions"]["kademlia"]
    assert [r["impl"] for r in results["runs"]] == ["tracker", "kademlia"]
    for run in results["runs"]:
        for key in ("success", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                    "stale_fraction", "completeness", "msgs_per_lookup", "bytes_per_lookup",
                    "maintenance_bytes_per_node_s", "records_per_node_mean"):
            assert key in run["metrics"]
    with (out / "timeseries.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["impl"] for r in rows} == {"tracker", "kademlia"}
    assert len(rows) == 2 * 4 and rows[0]["t"] == "0"
    for name in PLOT_FILES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    report = (out / "report.md").read_text()
    assert "timeline.png" in report and "| tracker |" in report
    # The saved trace replays to the same digest; plots redraw from disk.
    (out / "timeline.png").unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "timeline.png").exists()
    replay = tmp_path / "replay"
    assert main(["run", "steady", "--impl", "tracker", "--trace", str(out / "trace.json"),
                 "--quiet", "--out", str(replay)]) == 0
    again = json.loads((replay / "results.json").read_text())
    assert again["trace_digest"] == results["trace_digest"]


@pytest.mark.parametrize("argv", [
    ["run", "nosuch"],
    ["run", "steady", "--nodes", "many"],
    ["run", "steady", "--session", "weibull:0"],
    ["run", "steady", "--kill", "2@3"],
    ["run", "steady", "--impl", "bittorrent"],
    ["run", "steady", "--latency", "fast"],
    ["compare", "steady", "--impls", "kadshare,napster"],
    ["frobnicate"],
])
def test_bad_usage_exits_2_with_a_sentence(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() and "Traceback" not in err


def test_plot_of_a_folder_without_results_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert "results" in capsys.readouterr().err


def test_version_flag_prints_the_installed_version() -> None:
    """``kadshare-sim --version`` as a user types it, like ``kadshare``/``kadshare-node``."""
    import subprocess
    import sys
    from importlib import metadata

    sim = str(Path(sys.executable).with_name("kadshare-sim"))
    proc = subprocess.run([sim, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"kadshare-sim {metadata.version('kadshare')}"
