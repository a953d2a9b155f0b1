"""Human rates and sizes; the shared rate cap."""

from __future__ import annotations

import pytest

from kadcommon.pacing import Pacer
from kadcommon.units import parse_rate, parse_size


@pytest.mark.parametrize(("text", "value"), [
    ("512K", 512 * 1024), ("20M", 20 * 1024**2), ("20MiB", 20 * 1024**2), ("1G", 1024**3),
    ("100", 100), ("1.5M", 3 * 512 * 1024), (" 2kb ", 2048), ("0", 0),
])
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value
    assert parse_rate(text + "/s") == value


@pytest.mark.parametrize("bad", ["", "fast", "-1M", "20X", "M", "1e9"])
def test_bad_values_say_what_is_wanted(bad: str) -> None:
    with pytest.raises(ValueError, match="like 512K"):
        parse_rate(bad)


async def test_pacer_holds_back_beyond_its_burst_and_never_without_a_cap() -> None:
    capped = Pacer(10 * 1024 * 1024)
    for _ in range(4):
        await capped.take(1024 * 1024)
    assert capped.waited > 0  # 4 MiB against a 2.5 MiB burst had to wait
    free = Pacer(0)
    await free.take(10**9)
    assert free.waited == 0 and not free.enabled
