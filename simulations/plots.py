"""PNG plots from an output folder (matplotlib, Agg backend: no display needed).

Everything is drawn from the files on disk, so ``kadshare-sim plot DIR`` can redraw a
finished run: success and p99 latency over time with churn events marked, the latency
CDF per impl, and a comparison chart of the headline metrics.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulations.metrics import percentile  # noqa: E402
from simulations.report import load_results  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["draw_all", "PLOT_FILES"]

PLOT_FILES = ["timeline.png", "latency_cdf.png", "comparison.png"]
_COLORS = {"kadshare": "tab:blue", "kademlia": "tab:orange", "tracker": "tab:green"}


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


def _mark(ax: Any, marks: list[dict]) -> None:
    for m in marks:
        ax.axvline(float(m["t"]), color="red", linestyle="--", linewidth=1)
    return None


def _windows(rows: list[dict[str, str]], width: int) -> list[tuple[float, float | None,
                                                                  float | None]]:
    """(window start, success %, p99 ms) of eligible lookups per ``width``-second window."""
    buckets: dict[int, list[dict[str, str]]] = {}
    for r in rows:
        if r["eligible"] == "True":
            buckets.setdefault(int(float(r["t"]) // width), []).append(r)
    out = []
    for b in sorted(buckets):
        recs = buckets[b]
        ok = [1000.0 * float(r["latency"]) for r in recs if r["success"] == "True"]
        p99 = percentile(ok, 99)
        out.append((b * width + width / 2, 100.0 * len(ok) / len(recs), p99))
    return out


def _timeline(out: Path, results: dict, ts: list[dict[str, str]],
              lookups: list[dict[str, str]]) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    marks = results["runs"][0]["marks"] if results["runs"] else []
    duration = float(results["config"].get("duration") or 60)
    width = max(1, int(duration // 30))
    for run in results["runs"]:
        impl = run["impl"]
        color = _COLORS.get(impl)
        win = _windows([r for r in lookups if r["impl"] == impl], width)
        style = {"label": impl, "color": color, "linewidth": 1.4,
                 "marker": "." if len(win) < 40 else None}
        if win:
            axes[0].plot([w[0] for w in win], [w[1] for w in win], **style)
            lat = [(w[0], w[2]) for w in win if w[2] is not None]
            if lat:
                axes[1].plot([x for x, _ in lat], [y for _, y in lat], **style)
        alive = [(int(r["t"]), _f(r["alive"])) for r in ts if r["impl"] == impl]
        alive2 = [(x, y) for x, y in alive if y is not None]
        if alive2:
            axes[2].plot([x for x, _ in alive2], [y for _, y in alive2], label=impl,
                         color=color, linewidth=1.2)
    axes[0].set_ylabel(f"success % ({width} s windows)")
    axes[0].set_ylim(-5, 105)
    axes[1].set_ylabel("p99 latency ms (log)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("live nodes")
    axes[2].set_xlabel("seconds")
    for ax in axes:
        _mark(ax, marks)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left")
    title = f"{results['scenario']}: {results['config']['nodes']} nodes, seed {results['seed']}"
    if marks:
        title += "  (dashed: " + ", ".join(m["label"] for m in marks) + ")"
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=90)
    plt.close(fig)


def _cdf(out: Path, results: dict, lookups: list[dict[str, str]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in results["runs"]:
        impl = run["impl"]
        lat = sorted(1000.0 * float(r["latency"]) for r in lookups
                     if r["impl"] == impl and r["success"] == "True")
        if lat:
            ys = [(i + 1) / len(lat) for i in range(len(lat))]
            ax.step(lat, ys, where="post", label=f"{impl} (n={len(lat)})",
                    color=_COLORS.get(impl))
    ax.set_xscale("log")
    ax.set_xlabel("latency of successful lookups, ms (log)")
    ax.set_ylabel("fraction of lookups")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Lookup latency CDF", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=90)
    plt.close(fig)


def _comparison(out: Path, results: dict) -> None:
    keys = [("success", "success"), ("completeness", "completeness"),
            ("stale_fraction", "stale fraction")]
    runs = results["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        vals = [run["metrics"].get(k) or 0.0 for k, _ in keys]
        xs = [j + i * width for j in range(len(keys))]
        axes[0].bar(xs, vals, width, label=run["impl"], color=_COLORS.get(run["impl"]))
        b = [run["metrics"].get("bytes_per_lookup") or 0.0,
             run["metrics"].get("maintenance_bytes_per_node_s") or 0.0]
        axes[1].bar([j + i * width for j in range(2)], b, width, label=run["impl"],
                    color=_COLORS.get(run["impl"]))
    axes[0].set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(keys))])
    axes[0].set_xticklabels([k[1] for k in keys])
    axes[0].set_ylim(0, 1.05)
    axes[0].legend()
    axes[1].set_xticks([j + width * (len(runs) - 1) / 2 for j in range(2)])
    axes[1].set_xticklabels(["bytes per lookup", "maintenance B/node/s"])
    axes[1].set_yscale("symlog", linthresh=10)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{results['scenario']}: impls on the same trace", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=90)
    plt.close(fig)


def draw_all(out: Path) -> list[str]:
    """(Re)draw every plot in ``out``; return the file names written."""
    out = Path(out)
    results = load_results(out)
    ts = _read_csv(out / "timeseries.csv")
    lookups = _read_csv(out / "lookups.csv")
    _timeline(out, results, ts, lookups)
    _cdf(out, results, lookups)
    _comparison(out, results)
    return list(PLOT_FILES)
