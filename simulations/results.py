"""The results file of a run (``OUT/results.json``): its schema, writing and reading.

Apart from ``report.py`` (which writes every output and draws the plots) so that
``plots.py`` can read results without importing the report, and the report can import
the plots at the top: no import cycle between the two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "ResultsError", "load_results", "save_results"]

SCHEMA = 1


class ResultsError(ValueError):
    """An output folder without readable results."""


def save_results(out: Path, data: dict[str, Any]) -> None:
    """Write ``out/results.json`` whole or not at all (a temporary file, then a rename)."""
    path = Path(out) / "results.json"
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


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
