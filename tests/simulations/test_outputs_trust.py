"""Simulation output a reader can trust (issue 10, item 19): plots whose series can be
told apart and stay inside the measured window, labelled bars, a report that agrees with
results.json and links to its docs, and a progress line that ends on the table's figures.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import Rectangle

from simulations.cli import main
from simulations.report import TABLE_COLUMNS, _cell

DURATION = 6.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small mass-failure comparison, progress line on (stderr is not a terminal)."""
    out = tmp_path_factory.mktemp("trust") / "out"
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        code = main(["compare", "mass-failure", "--nodes", "8", "--duration", str(DURATION),
                     "--files", "3", "--seed", "2", "--impls", "kadshare,tracker",
                     "--lookup-timeout", "3", "--out", str(out)])
    assert code == 0, err.getvalue()
    return {"out": out, "stderr": err.getvalue(), "stdout": std.getvalue(),
            "results": json.loads((out / "results.json").read_text())}


def test_timeline_impls_distinct_inside_window_schedule_and_event_lines(run) -> None:
    from simulations.plots import timeline_figure

    fig = timeline_figure(run["out"])
    try:
        success, _, alive = fig.axes[:3]
        lines = {ln.get_label(): ln for ln in success.get_lines()}
        kad, trk = lines["kadshare"], lines["tracker"]
        # Both impls at 100 %: distinct line style and marker keep both visible.
        assert kad.get_linestyle() != trk.get_linestyle()
        assert kad.get_marker() != trk.get_marker()
        # No series runs past the measured window.
        for ax in fig.axes[:3]:
            assert ax.get_xlim()[1] <= DURATION
            for ln in ax.get_lines():
                xs = [float(x) for x in ln.get_xdata()]
                assert not xs or max(xs) <= DURATION, ln.get_label()
        # The live-nodes panel shows what the trace schedules, and its departures.
        labels = [ln.get_label() for ln in alive.get_lines()]
        assert "scheduled by the trace" in labels and "leave/crash (trace)" in labels
        # The crash promised as a dashed line is on every panel, and named.
        t_kill = run["results"]["runs"][0]["marks"][0]["t"]
        for ax in fig.axes[:3]:
            dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"
                      and list(ln.get_xdata()) == [t_kill, t_kill]]
            assert dashed, ax.get_ylabel()
        assert any("crashed" in t.get_text() for t in success.texts)
    finally:
        plt.close(fig)


def test_comparison_has_units_value_labels_direction_and_no_cut_bar(run) -> None:
    from simulations.plots import comparison_figure

    fig = comparison_figure(run["out"])
    try:
        for ax in fig.axes:
            assert ax.get_ylabel(), ax.get_title()
            bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_width() > 0]
            values = [t.get_text() for t in ax.texts]
            assert len(values) == len(bars) >= 2 and all(values), ax.get_title()
            top = ax.get_ylim()[1]
            assert all(b.get_height() < top for b in bars), ax.get_title()
            ticks = [t.get_text() for t in ax.get_xticklabels()]
            assert ticks and all("is better" in t for t in ticks), ticks
        quality = fig.axes[0]
        assert quality.get_ylabel() == "percent"
        assert "100.0%" in [t.get_text() for t in quality.texts]
    finally:
        plt.close(fig)


def test_report_counts_validity_and_docs_link(run) -> None:
    out, results = run["out"], run["results"]
    report = (out / "report.md").read_text()
    head = next(line for line in report.splitlines() if line.startswith("| impl | success"))
    cols = [c.strip() for c in head.strip("|").split("|")]
    for r in results["runs"]:
        row = next(line for line in report.splitlines() if line.startswith(f"| {r['impl']} |"))
        cells = dict(zip(cols, [c.strip() for c in row.strip("|").split("|")], strict=True))
        assert int(cells["lookups"]) == r["metrics"]["lookups"]
        assert int(cells["eligible"]) == r["metrics"]["lookups_eligible"]
        assert f"{r['impl']}: {r['metrics']['lookups']} lookups recorded" in report
        lag = r["metrics"]["loop_lag_max_ms"]
        assert f"| {r['impl']} | {r['metrics']['loop_lag_p50_ms']:.1f} | {lag:.1f} |" in report
    assert "loop lag" in report and "50% crashed at 2 s" in report
    link = re.search(r"\[docs/SIMULATIONS.md\]\(([^)]+)\)", report)
    assert link, report
    assert (out / link.group(1)).resolve().is_file()


def test_progress_line_has_eta_and_ends_on_the_tables_figures(run) -> None:
    lines = run["stderr"].splitlines()
    assert any(re.search(r"\[kadshare/inproc\] t=\s*0/6s eta\s+\d+s", ln) for ln in lines)
    for r in run["results"]["runs"]:
        final = [ln for ln in lines if ln.startswith(f"[{r['impl']}/inproc] done 6/6s")]
        assert len(final) == 1, lines
        m = r["metrics"]
        fmt = {k: f for k, _, f in TABLE_COLUMNS}
        success, p99 = (_cell(m["success"], fmt["success"]),
                        _cell(m["latency_p99_ms"], fmt["latency_p99_ms"]))
        assert f"lookups={m['lookups']:5d} eligible={m['lookups_eligible']:5d}" in final[0]
        assert f"success={success:>6}" in final[0]
        assert f"p99={p99}{'' if p99 == '-' else 'ms'}" in final[0]
        # ... and the table printed at the end shows the same figures.
        assert f"| {r['impl']} | {success} |" in run["stdout"] and p99 in run["stdout"]
