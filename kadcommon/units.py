"""Human units: durations and sizes as a person reads them in a table."""

from __future__ import annotations

import math
import re


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


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_TEXT = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'512K' -> 524288, '20M' -> 20971520, '1.5G', '100' (bytes); ValueError otherwise.

    K, M, G, T are powers of 1024 (an optional ``iB``/``B`` is accepted), as
    ``--max-upload`` has always read them.
    """
    match = _SIZE_TEXT.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"want a size like 512K, 20M or 1G, got {str(text)[:40]!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_rate(text: str | None) -> int:
    """Bytes per second of '20M', '512K', '20M/s', '20MB/s'; '0' or None means no cap."""
    if text is None:
        return 0
    value = str(text).strip()
    if value.lower().endswith("/s"):
        value = value[:-2]
    try:
        return parse_size(value)
    except ValueError:
        raise ValueError(
            f"want a rate like 512K or 20M (bytes per second), got {str(text)[:40]!r}"
        ) from None
