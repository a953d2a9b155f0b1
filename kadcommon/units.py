"""Human units: durations and sizes as a person reads them in a table."""

from __future__ import annotations

import math


def human_duration(seconds: float) -> str:
    """3546 -> '59 min', 4000 -> '1 h 7 min', 200000 -> '2 d 8 h', 42 -> '42 s'.

    Two units at most: an expiry or an ETA needs the order of magnitude, not the second.
    Negative values read as 0 s; non-finite ones as '?'.
    """
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "?"
    total = max(0, int(round(seconds)))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min" if minutes >= 10 or not secs else f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def human_size(size: object) -> str:
    """1536 -> '1.5 KiB'; a negative or non-integer size -> '?'."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
