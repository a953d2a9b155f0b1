"""The ``digest`` of results.json: SHA-256 of its canonical metrics.

Canonical metrics are everything a run measured about the designs, and nothing about
the machine or the moment: the seed, scenario, config, trace digest, and per run the
impl, runner, metrics, infra, marks and traffic, minus the fields below, which are wall
clock or host readings (how long warm-up took on this machine, how starved the harness
loop was, how much CPU it used) and the progress switch. With ``--runner virtual``
the same command and seed give the same digest whatever else runs on the machine; with
real runners the digest still tells whether two runs measured the same thing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_metrics", "metrics_digest", "HOST_FIELDS"]

#: Metrics that depend on the host or the wall clock, not on the protocol.
HOST_FIELDS = frozenset({"warmup_s", "warmup_sim_s", "loop_lag_p50_ms", "loop_lag_max_ms",
                         "harness_cpu_fraction"})
_RUN_KEYS = ("impl", "runner", "metrics", "infra", "marks", "traffic")


def canonical_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The part of a results dict that the digest covers."""
    config = {k: v for k, v in results.get("config", {}).items() if k != "progress"}
    runs = []
    for run in results.get("runs", []):
        item = {k: run.get(k) for k in _RUN_KEYS}
        item["metrics"] = {k: v for k, v in (run.get("metrics") or {}).items()
                           if k not in HOST_FIELDS}
        runs.append(item)
    return {"seed": results.get("seed"), "scenario": results.get("scenario"),
            "config": config, "trace_digest": results.get("trace_digest"), "runs": runs}


def metrics_digest(results: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical metrics as sorted, compact JSON."""
    blob = json.dumps(canonical_metrics(results), sort_keys=True, separators=(",", ":"),
                      allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()
