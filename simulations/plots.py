"""PNG plots from an output folder (matplotlib, Agg backend: no display needed).

Everything is drawn from the files on disk, so ``kadshare-sim plot DIR`` can redraw a
finished run: success and p99 latency over time with churn events marked, the latency
CDF per impl, and a comparison chart of the headline metrics.

Each impl has its own colour, line style and marker, so equal series (two impls at
100 %) stay visible one over the other; every series stops at the end of the measured
window; the live-nodes panel shows the population the trace schedules beside the nodes
each impl really had up, so a difference between impls reads as what it is (nodes still
joining, or joins that failed).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from simulations.metrics import percentile  # noqa: E402
from simulations.results import load_results  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["draw_all", "PLOT_FILES", "timeline_figure", "comparison_figure", "STYLES"]

PLOT_FILES = ["timeline.png", "latency_cdf.png", "comparison.png"]
STYLES: dict[str, dict[str, Any]] = {
    "kadshare": {"color": "tab:blue", "linestyle": "-", "marker": "o"},
    "kademlia": {"color": "tab:orange", "linestyle": "--", "marker": "s"},
    "tracker": {"color": "tab:green", "linestyle": ":", "marker": "^"},
}
_SPARE = [{"color": c, "linestyle": "-.", "marker": m}
          for c, m in (("tab:purple", "D"), ("tab:brown", "v"), ("tab:gray", "x"))]
MARK_COLOR = "tab:red"
TRACE_COLOR = "0.6"


def style_for(impl: str, position: int) -> dict[str, Any]:
    """Colour, line style and marker of ``impl`` (a spare one for an unknown impl)."""
    return dict(STYLES.get(impl) or _SPARE[position % len(_SPARE)])


def _f(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _read_trace(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("no readable trace in %s (%s): live-nodes panel without schedule",
                    path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _windows(rows: list[dict[str, str]], width: float, duration: float
             ) -> list[tuple[float, float, float | None]]:
    """(window middle, success %, p99 ms) of eligible lookups per ``width``-second window,
    only for lookups started inside the measured window [0, duration)."""
    buckets: dict[int, list[dict[str, str]]] = {}
    for r in rows:
        t = _f(r["t"])
        if r["eligible"] == "True" and t is not None and 0 <= t < duration:
            buckets.setdefault(int(t // width), []).append(r)
    out = []
    for b in sorted(buckets):
        recs = buckets[b]
        ok = [1000.0 * float(r["latency"]) for r in recs if r["success"] == "True"]
        start, end = b * width, min((b + 1) * width, duration)
        out.append(((start + end) / 2, 100.0 * len(ok) / len(recs), percentile(ok, 99)))
    return out


def _schedule(trace: dict[str, Any], duration: float
              ) -> tuple[list[float], list[int], list[float], list[float]]:
    """The population the trace schedules: step points (t, nodes), and the times of its
    joins and departures inside the measured window."""
    alive = len(trace.get("initial", []))
    xs, ys = [0.0], [alive]
    joins: list[float] = []
    departs: list[float] = []
    present = {int(n["node"]) for n in trace.get("initial", [])}
    for e in trace.get("events", []):
        t = float(e["t"])
        if t > duration:
            break
        op = e.get("op")
        if op == "join":
            present.add(int(e["node"]))
            joins.append(t)
        elif op in ("leave", "crash") and int(e["node"]) in present:
            present.discard(int(e["node"]))
            departs.append(t)
        else:
            continue
        xs.append(t)
        ys.append(len(present))
    xs.append(duration)
    ys.append(len(present))
    return xs, ys, joins, departs


def _mark(ax: Any, marks: list[dict], label_them: bool) -> None:
    """A dashed vertical line per big event (kill, tracker kill, flash crowd)."""
    for m in marks:
        ax.axvline(float(m["t"]), color=MARK_COLOR, linestyle="--", linewidth=1.2,
                   label="_mark")
        if label_them:
            ax.annotate(m["label"], (float(m["t"]), 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", color=MARK_COLOR,
                        fontsize=8)


def timeline_figure(out: Path) -> Figure:
    """Success %, p99 latency and live nodes over the measured window, per impl."""
    out = Path(out)
    results = load_results(out)
    lookups = _read_csv(out / "lookups.csv")
    ts = _read_csv(out / "timeseries.csv")
    trace = _read_trace(out / "trace.json")
    duration = float(results["config"].get("duration") or 60)
    width = max(1, int(duration // 30))
    marks = results["runs"][0]["marks"] if results["runs"] else []
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    if trace:
        xs, ys, joins, departs = _schedule(trace, duration)
        axes[2].step(xs, ys, where="post", color=TRACE_COLOR, linewidth=4, alpha=0.6,
                     label="scheduled by the trace", zorder=1)
        at = dict(zip(xs, ys, strict=True))
        if joins:
            axes[2].plot(joins, [at[t] for t in joins], linestyle="none", marker="^",
                         color=TRACE_COLOR, markersize=7, label="join (trace)", zorder=10)
        if departs:
            axes[2].plot(departs, [at[t] for t in departs], linestyle="none", marker="v",
                         color=MARK_COLOR, markersize=7, label="leave/crash (trace)",
                         zorder=10)
    for pos, run in enumerate(results["runs"]):
        impl = run["impl"]
        st = style_for(impl, pos)
        win = _windows([r for r in lookups if r["impl"] == impl], width, duration)
        # Markers on few points only, and hollow, so that overlapping impls stay visible.
        line = {**st, "linewidth": 1.5, "markersize": 6, "markerfacecolor": "none",
                "markevery": max(1, len(win) // 25), "zorder": 3 + pos}
        if win:
            axes[0].plot([w[0] for w in win], [w[1] for w in win], label=impl, **line)
            lat = [(w[0], w[2]) for w in win if w[2] is not None]
            if lat:
                axes[1].plot([x for x, _ in lat], [y for _, y in lat], label=impl, **line)
        alive = [(float(r["t"]), _f(r["alive"])) for r in ts if r["impl"] == impl]
        alive2 = [(x, y) for x, y in alive if y is not None and x <= duration]
        if alive2:
            alive2.append((duration, alive2[-1][1]))   # the last second lasts to the end
            failed = run["metrics"].get("join_failures") or 0
            axes[2].step([x for x, _ in alive2], [y for _, y in alive2], where="post",
                         label=f"{impl}: up ({failed} join failures)",
                         **{**line, "markevery": max(1, len(alive2) // 8)})
    axes[0].set_ylabel(f"success % ({width} s windows)")
    axes[0].set_ylim(-5, 110)
    axes[1].set_ylabel("p99 latency, ms (log)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("live nodes")
    axes[2].set_xlabel("seconds into the measured window")
    axes[2].set_xlim(0, duration)
    for i, ax in enumerate(axes):
        _mark(ax, marks, label_them=i == 0)
        ax.grid(alpha=0.3)
    # Legends beside the panels, never over the data.
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[2].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                   title="nodes up; below the grey\nschedule = still joining\nor join failed",
                   title_fontsize=7)
    title = (f"{results['scenario']}: {results['config']['nodes']} nodes, "
             f"seed {results['seed']}, same trace for every impl")
    if marks:
        title += "\n(dashed red: " + ", ".join(m["label"] for m in marks) + ")"
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _cdf(out: Path, results: dict, lookups: list[dict[str, str]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for pos, run in enumerate(results["runs"]):
        impl = run["impl"]
        lat = sorted(1000.0 * float(r["latency"]) for r in lookups
                     if r["impl"] == impl and r["success"] == "True")
        if lat:
            ys = [(i + 1) / len(lat) for i in range(len(lat))]
            st = style_for(impl, pos)
            ax.step(lat, ys, where="post", label=f"{impl} (n={len(lat)})",
                    color=st["color"], linestyle=st["linestyle"], linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("latency of successful lookups, ms (log)")
    ax.set_ylabel("fraction of lookups")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Lookup latency CDF (further left is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=90)
    plt.close(fig)


# (metric key, tick label, scale to the panel's unit, better) per panel.
_PANELS: list[tuple[str, str, list[tuple[str, str, float, str]]]] = [
    ("Lookup quality", "percent", [
        ("success", "success", 100.0, "higher"),
        ("completeness", "completeness", 100.0, "higher"),
        ("stale_fraction", "stale answers", 100.0, "lower")]),
    ("Latency of successful lookups", "milliseconds", [
        ("latency_p50_ms", "p50", 1.0, "lower"),
        ("latency_p99_ms", "p99", 1.0, "lower")]),
    ("Traffic per lookup", "bytes per lookup", [
        ("bytes_per_lookup", "bytes/lookup", 1.0, "lower")]),
    ("Maintenance traffic", "bytes per node per second", [
        ("maintenance_bytes_per_node_s", "maintenance", 1.0, "lower")]),
]


def _value_text(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "percent":
        return f"{v:.1f}%"
    return f"{v:.1f}" if v < 10 else f"{v:,.0f}"


def comparison_figure(out: Path) -> Figure:
    """Bars of the headline metrics per impl: units on every axis, a value on every
    bar ("n/a" where a runner cannot count it), and which direction is better."""
    results = load_results(Path(out))
    runs = results["runs"]
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(13, 4.6),
                             gridspec_kw={"width_ratios": [3, 2, 1.2, 1.2]})
    width = 0.8 / max(1, len(runs))
    for ax, (title, unit, keys) in zip(axes, _PANELS, strict=True):
        top = 0.0
        for i, run in enumerate(runs):
            st = style_for(run["impl"], i)
            raw = [run["metrics"].get(k) for k, _, _, _ in keys]
            vals = [None if v is None else float(v) * scale
                    for v, (_, _, scale, _) in zip(raw, keys, strict=True)]
            xs = [j + i * width for j in range(len(keys))]
            bars = ax.bar(xs, [v or 0.0 for v in vals], width, label=run["impl"],
                          color=st["color"], edgecolor="black", linewidth=0.5,
                          hatch={"-": "", "--": "//", ":": ".."}.get(st["linestyle"], "xx"))
            ax.bar_label(bars, labels=[_value_text(v, unit) for v in vals], fontsize=7,
                         padding=2, rotation=90 if len(runs) * len(keys) > 6 else 0)
            top = max([top, *[v for v in vals if v is not None]])
        ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(keys))])
        ax.set_xticklabels([f"{label}\n({better} is better)"
                            for _, label, _, better in keys], fontsize=8)
        ax.set_ylabel(unit)
        # Room above the tallest bar for its value label: no bar or label is cut off.
        ax.set_ylim(0, (top or 1.0) * 1.3)
        if unit == "percent":
            ax.set_yticks(range(0, 101, 20))
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.93),
               ncol=max(1, len(runs)), fontsize=8, frameon=False)
    fig.suptitle(f"{results['scenario']}: impls on the same trace "
                 f"({results['config']['nodes']} nodes, seed {results['seed']})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_all(out: Path) -> list[str]:
    """(Re)draw every plot in ``out``; return the file names written."""
    out = Path(out)
    results = load_results(out)
    _save(timeline_figure(out), out / "timeline.png")
    _cdf(out, results, _read_csv(out / "lookups.csv"))
    _save(comparison_figure(out), out / "comparison.png")
    return list(PLOT_FILES)
