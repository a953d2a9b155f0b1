"""Outputs of a run or comparison: results.json, timeseries.csv, lookups.csv,
trace.json and report.md (which embeds the PNG plots drawn by plots.py)."""

from __future__ import annotations

import csv
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from simulations.digest import metrics_digest
from simulations.engine import RunOutcome
from simulations.plots import draw_all
from simulations.results import SCHEMA, save_results
from simulations.scenarios import Trace

__all__ = ["write_outputs", "metrics_table"]

TS_FIELDS = ["impl", "t", "alive", "lookups", "eligible", "success", "latency_p50_ms",
             "latency_p99_ms", "bytes_sent", "records_mean"]
LOOKUP_FIELDS = ["impl", "t", "node", "file", "eligible", "success", "latency", "returned",
                 "stale", "live", "found_live", "msgs", "nbytes", "error", "crowd",
                 "fetched", "fetch_s"]
TABLE_COLUMNS = [
    ("success", "success", "{:.1%}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p95_ms", "p95 ms", "{:.1f}"),
    ("latency_p99_ms", "p99 ms", "{:.1f}"),
    ("stale_fraction", "stale", "{:.1%}"),
    ("completeness", "complete", "{:.2f}"),
    ("msgs_per_lookup", "msgs/lookup", "{:.1f}"),
    ("bytes_per_lookup", "bytes/lookup", "{:.0f}"),
    ("maintenance_bytes_per_node_s", "maint B/node/s", "{:.0f}"),
    ("records_per_node_mean", "records/node", "{:.1f}"),
    ("lookups", "lookups", "{}"),
    ("lookups_eligible", "eligible", "{}"),
]
# Validity of each run: (metric key, column, format); see docs/SIMULATIONS.md.
VALIDITY_COLUMNS = [
    ("loop_lag_p50_ms", "loop lag p50 ms", "{:.1f}"),
    ("loop_lag_max_ms", "loop lag max ms", "{:.1f}"),
    ("harness_cpu_fraction", "harness CPU", "{:.0%}"),
    ("join_failures", "join failures", "{}"),
    ("alive_end", "nodes up at end", "{}"),
    ("warmup_s", "warm-up s", "{:.1f}"),
]
# Above this, the harness's own loop delayed nodes: latencies measure the machine.
LAG_WARN_MS = 100.0
DOCS = Path(__file__).resolve().parent.parent / "docs" / "SIMULATIONS.md"


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("kadshare", "kademlia", "rpcudp", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _cell(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def metrics_table(runs: list[dict[str, Any]],
                  columns: list[tuple[str, str, str]] = TABLE_COLUMNS) -> str:
    """Markdown table: one row per impl, the given metrics (the headline ones by
    default) as columns."""
    head = "| impl | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---" * (len(columns) + 1) + "|"
    rows = [head, sep]
    for run in runs:
        m = run["metrics"]
        cells = [_cell(m.get(key), fmt) for key, _, fmt in columns]
        rows.append(f"| {run['impl']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _docs_link(out: Path) -> str:
    """A link to docs/SIMULATIONS.md that resolves from the output folder (relative,
    so the folder may move with the checkout), or the plain name if the docs are not
    on this machine (an installed, not editable, package)."""
    if not DOCS.exists():
        return "docs/SIMULATIONS.md in the kadshare repository"
    return f"[docs/SIMULATIONS.md]({Path(os.path.relpath(DOCS, out.resolve())).as_posix()})"


def _events(results: dict[str, Any]) -> str:
    """The trace's big events (a scenario's default kill too, which config lacks)."""
    marks = results["runs"][0]["marks"] if results["runs"] else []
    return ", ".join(f"{m['label']} at {float(m['t']):g} s" for m in marks) or "none"


def _validity(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Validity of the run",
        "",
        "Loop lag is how late the harness's 1 s ticker woke: with `inproc` every node "
        "shares that loop, so a lag of tens of ms delays every node and shows up in the "
        "latencies. Harness CPU is its CPU time / measured seconds (near 100 % = "
        "CPU-bound). Nodes up at end: joined and up when the run finished, after the "
        "wait for lookups in flight, so it can exceed the timeline's last value when "
        "joins were slow.",
        "",
        metrics_table(results["runs"], VALIDITY_COLUMNS),
        "",
    ]
    for run in results["runs"]:
        lag = run["metrics"].get("loop_lag_max_ms")
        if lag is not None and lag > LAG_WARN_MS:
            lines.append(f"**Warning:** {run['impl']}: the harness loop lagged up to "
                         f"{lag:.0f} ms; its latencies include that delay.")
            lines.append("")
    return lines


def _lookup_counts(results: dict[str, Any]) -> list[str]:
    lines = ["## Lookups", ""]
    for run in results["runs"]:
        m = run["metrics"]
        lines.append(
            f"- {run['impl']}: {m.get('lookups')} lookups recorded, "
            f"{m.get('lookups_eligible')} eligible (their file had a live provider), "
            f"{m.get('lookups_failed')} of those failed; {m.get('lookups_skipped')} "
            "skipped because the origin node was not up (slow or failed join).")
    lines += [
        "",
        "The timeline counts, per impl, the nodes that finished joining and are still "
        "up; the trace schedules the same population for every impl (grey line). An "
        "impl with slow joins (plain kademlia waits for every dead bootstrap contact) "
        "has fewer nodes up, so fewer lookups can start.",
        "",
    ]
    return lines


def write_outputs(out: Path, trace: Trace, outcomes: list[RunOutcome], *,
                  command: list[str], started: datetime) -> dict[str, Any]:
    """Write every output file into ``out``; return the results dict."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = trace.config
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command,
        "versions": _versions(),
        "seed": cfg.seed,
        "scenario": cfg.scenario,
        "config": cfg.to_json(),
        "trace_digest": trace.digest(),
        "trace_events": len(trace.events),
        "nodes_total": trace.node_count(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": [{
            "impl": o.impl, "runner": o.runner, "metrics": o.summary,
            "infra": o.infra, "marks": o.marks, "transfers": o.transfers,
            "traffic": {"msgs": o.traffic["msgs"], "bytes": o.traffic["bytes"],
                        "dropped": o.traffic["dropped"]},
        } for o in outcomes],
    }
    results["digest"] = metrics_digest(results)
    save_results(out, results)
    trace.save(out / "trace.json")
    with (out / "timeseries.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TS_FIELDS)
        w.writeheader()
        for o in outcomes:
            for row in o.timeseries:
                w.writerow({"impl": o.impl, **row})
    with (out / "lookups.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOOKUP_FIELDS)
        w.writeheader()
        for o in outcomes:
            for row in o.lookups:
                w.writerow({"impl": o.impl, **row})
    plots = draw_all(out)
    write_report(out, results, plots)
    return results


def write_report(out: Path, results: dict[str, Any], plots: list[str]) -> None:
    """report.md: the command, the table and the plots."""
    cfg = results["config"]
    lines = [
        f"# kadshare-sim: {results['scenario']}",
        "",
        "```",
        " ".join(results["command"]),
        "```",
        "",
        f"{cfg['nodes']} nodes, {cfg['duration']:g} s measured, seed {results['seed']}, "
        f"runner {results['runs'][0]['runner'] if results['runs'] else '?'} "
        f"(transfers: {results['runs'][0].get('transfers', '?') if results['runs'] else '?'}), "
        f"session {cfg['session']}, events: {_events(results)}, "
        f"latency {cfg['latency'][0] * 1000:g}-{cfg['latency'][1] * 1000:g} ms, "
        f"loss {cfg['loss']:g}, {cfg['files']} files x {cfg['providers']} providers, "
        f"{cfg['lookup_rate']:g} lookups/s. Trace sha256 `{results['trace_digest'][:16]}`.",
        "",
        metrics_table(results["runs"]),
        "",
        f"Metric definitions: {_docs_link(out)}.",
        "",
        *_lookup_counts(results),
        *_validity(results),
    ]
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    (out / "report.md").write_text("\n".join(lines))
