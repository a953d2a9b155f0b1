"""Outputs of a run or comparison: results.json, timeseries.csv, lookups.csv,
trace.json and report.md (which embeds the PNG plots drawn by plots.py)."""

from __future__ import annotations

import csv
import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from simulations.digest import metrics_digest
from simulations.engine import RunOutcome
from simulations.scenarios import Trace

__all__ = ["write_outputs", "load_results", "metrics_table", "SCHEMA", "ResultsError"]

SCHEMA = 1
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
    ("lookups_eligible", "lookups", "{}"),
]


class ResultsError(ValueError):
    """An output folder without readable results."""


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


def metrics_table(runs: list[dict[str, Any]]) -> str:
    """Markdown table: one row per impl, the headline metrics as columns."""
    head = "| impl | " + " | ".join(c[1] for c in TABLE_COLUMNS) + " |"
    sep = "|---" * (len(TABLE_COLUMNS) + 1) + "|"
    rows = [head, sep]
    for run in runs:
        m = run["metrics"]
        cells = [_cell(m.get(key), fmt) for key, _, fmt in TABLE_COLUMNS]
        rows.append(f"| {run['impl']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


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
            "infra": o.infra, "marks": o.marks,
            "traffic": {"msgs": o.traffic["msgs"], "bytes": o.traffic["bytes"],
                        "dropped": o.traffic["dropped"]},
        } for o in outcomes],
    }
    results["digest"] = metrics_digest(results)
    _write_json(out / "results.json", results)
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
    from simulations.plots import draw_all

    plots = draw_all(out)
    write_report(out, results, plots)
    return results


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


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
        f"runner {results['runs'][0]['runner'] if results['runs'] else '?'}, "
        f"session {cfg['session']}, kill {cfg['kill'] or '-'}, "
        f"kill-tracker {cfg['kill_tracker'] if cfg['kill_tracker'] is not None else '-'}, "
        f"latency {cfg['latency'][0] * 1000:g}-{cfg['latency'][1] * 1000:g} ms, "
        f"loss {cfg['loss']:g}, {cfg['files']} files x {cfg['providers']} providers, "
        f"{cfg['lookup_rate']:g} lookups/s. Trace sha256 `{results['trace_digest'][:16]}`.",
        "",
        metrics_table(results["runs"]),
        "",
        "Metric definitions: docs/SIMULATIONS.md.",
        "",
    ]
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    (out / "report.md").write_text("\n".join(lines))


def load_results(out: Path) -> dict[str, Any]:
    """Read ``out/results.json`` with a clear error."""
    path = Path(out) / "results.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"no readable results in {out}: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "runs" not in data:
        raise ResultsError(f"{path} is not a kadshare-sim results file (schema {SCHEMA})")
    return data
