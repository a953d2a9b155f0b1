"""Metrics of one run, as defined in docs/SIMULATIONS.md.

The engine appends one ``LookupRecord`` per lookup and one ``Sample`` per second; this
module turns them into the summary of results.json and the rows of timeseries.csv.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LookupRecord", "Sample", "Recorder", "percentile", "progress_figures"]


@dataclass
class LookupRecord:
    """One lookup. ``eligible``: its file had a live provider when it started."""

    t: float                  # seconds since the measured run began
    node: int
    file: int
    eligible: bool
    success: bool             # returned at least one provider that is live
    latency: float            # seconds (also for failures: until the answer/timeout)
    returned: int = 0         # distinct providers returned
    stale: int = 0            # of those, not live (dead, left or never a provider)
    live: int = 0             # live providers of the file (start and end of lookup)
    found_live: int = 0       # of those, returned
    msgs: int = 0             # datagrams the lookup sent
    nbytes: int = 0           # bytes of those datagrams
    error: str = ""
    crowd: bool = False
    fetched: bool | None = None   # --fetch: file downloaded and verified over gRPC
    fetch_s: float | None = None


@dataclass
class Sample:
    """State of the network at one second."""

    t: int
    alive: int
    records_mean: float = 0.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


@dataclass
class Recorder:
    """Everything measured in one run."""

    lookups: list[LookupRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    skipped: int = 0           # lookups whose origin node was not up
    events: list[dict] = field(default_factory=list)   # churn marks for plots

    def headline(self) -> dict[str, Any]:
        """Counts, success and latency percentiles so far: the progress line and the
        final table both come from here, so they cannot disagree."""
        elig = [r for r in self.lookups if r.eligible]
        ok = [r for r in elig if r.success]
        lat = [r.latency for r in ok]
        return {
            "lookups": len(self.lookups),
            "lookups_eligible": len(elig),
            "lookups_skipped": self.skipped,
            "lookups_failed": len(elig) - len(ok),
            "success": _ratio(len(ok), len(elig)),
            "latency_p50_ms": _ms(percentile(lat, 50)),
            "latency_p95_ms": _ms(percentile(lat, 95)),
            "latency_p99_ms": _ms(percentile(lat, 99)),
        }

    def summary(self, *, node_seconds: float, maintenance_bytes: int,
                duration: float, marks: list[float]) -> dict[str, Any]:
        """The ``metrics`` object of results.json."""
        done = self.lookups
        elig = [r for r in done if r.eligible]
        returned = sum(r.returned for r in done)
        comp = [r.found_live / r.live for r in elig if r.live]
        out: dict[str, Any] = {
            **self.headline(),
            "stale_fraction": _ratio(sum(r.stale for r in done), returned),
            "completeness": (sum(comp) / len(comp)) if comp else None,
            "msgs_per_lookup": _ratio(sum(r.msgs for r in done), len(done)),
            "bytes_per_lookup": _ratio(sum(r.nbytes for r in done), len(done)),
            "maintenance_bytes_per_node_s": _ratio(maintenance_bytes, node_seconds),
            "node_seconds": round(node_seconds, 1),
            "errors": _count_errors(done),
        }
        if marks:
            t_mark = min(marks)
            before = [r for r in elig if r.t < t_mark]
            # Give the network a moment: lookups started in flight at the mark are excluded.
            after = [r for r in elig if r.t >= t_mark + 1.0]
            out["first_event_t"] = t_mark
            out["success_before_event"] = _ratio(sum(r.success for r in before), len(before))
            out["success_after_event"] = _ratio(sum(r.success for r in after), len(after))
            out["lookups_after_event"] = len(after)
        fetches = [r for r in done if r.fetched is not None]
        if fetches:
            ok_f = [r for r in fetches if r.fetched]
            out["fetches"] = len(fetches)
            out["fetch_success"] = _ratio(len(ok_f), len(fetches))
            out["fetch_p50_ms"] = _ms(percentile([r.fetch_s or 0.0 for r in ok_f], 50))
            out["fetch_p99_ms"] = _ms(percentile([r.fetch_s or 0.0 for r in ok_f], 99))
        crowd = [r for r in elig if r.crowd]
        if crowd:
            out["crowd_success"] = _ratio(sum(r.success for r in crowd), len(crowd))
            out["crowd_latency_p99_ms"] = _ms(percentile([r.latency for r in crowd
                                                          if r.success], 99))
            crowd_f = [r for r in crowd if r.fetched is not None]
            if crowd_f:  # --fetch: did the whole crowd get the file, and how fast
                out["crowd_fetch_success"] = _ratio(sum(bool(r.fetched) for r in crowd_f),
                                                    len(crowd_f))
                ok_times = [r.fetch_s or 0.0 for r in crowd_f if r.fetched]
                out["crowd_fetch_max_ms"] = _ms(max(ok_times)) if ok_times else None
        return out

    def timeseries(self, duration: float, bytes_per_second: dict[int, int]) -> list[dict]:
        """One row per second: lookups, success, p50/p99 latency, alive, bytes sent."""
        rows = []
        by_sec: dict[int, list[LookupRecord]] = {}
        for r in self.lookups:
            by_sec.setdefault(int(r.t), []).append(r)
        samples = {s.t: s for s in self.samples}
        for sec in range(int(math.ceil(duration))):
            recs = by_sec.get(sec, [])
            elig = [r for r in recs if r.eligible]
            ok = [r.latency for r in elig if r.success]
            s = samples.get(sec)
            rows.append({
                "t": sec,
                "alive": s.alive if s else "",
                "lookups": len(recs),
                "eligible": len(elig),
                "success": _fmt(_ratio(len(ok), len(elig))),
                "latency_p50_ms": _fmt(_ms(percentile(ok, 50))),
                "latency_p99_ms": _fmt(_ms(percentile(ok, 99))),
                "bytes_sent": bytes_per_second.get(sec, 0),
                "records_mean": _fmt(s.records_mean if s else None),
            })
        return rows

    def lookup_rows(self) -> list[dict]:
        """Per-lookup records (for the latency CDF when redrawing plots)."""
        return [asdict(r) for r in self.lookups]


def progress_figures(m: dict[str, Any], alive: int) -> str:
    """``alive= lookups= eligible= success= p99=`` of a headline or summary, formatted
    as the final table formats them (report.TABLE_COLUMNS)."""
    success = "-" if m["success"] is None else f"{m['success']:.1%}"
    p99 = "-" if m["latency_p99_ms"] is None else f"{m['latency_p99_ms']:.1f}ms"
    return (f"alive={alive:4d} lookups={m['lookups']:5d} eligible={m['lookups_eligible']:5d}"
            f" success={success:>6} p99={p99}")


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 2)


def _fmt(v: float | None) -> str | float:
    return "" if v is None else round(v, 4)


def _count_errors(done: list[LookupRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in done:
        if r.error:
            out[r.error] = out.get(r.error, 0) + 1
    return out
