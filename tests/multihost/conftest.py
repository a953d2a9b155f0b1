"""The ``lab`` fixture: five namespaces on one bridge, always torn down."""

from collections.abc import Iterator

import pytest

from tests.multihost.netns import Lab, LabUnavailable


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Five hosts; skipped with the reason when namespaces cannot be made here."""
    lab = Lab(5)
    try:
        lab.open()
    except LabUnavailable as exc:
        pytest.skip(f"multi-host lab unavailable: {exc}")
    try:
        yield lab
    finally:
        lab.close()
