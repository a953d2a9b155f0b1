"""Time budget of a fuzz test: the suite's 180 s default, or hours for the long profile."""

import pytest
from hypothesis import settings


def budget() -> pytest.MarkDecorator:
    """A pytest-timeout mark scaled to the active hypothesis profile's example count."""
    examples = settings.default.max_examples
    return pytest.mark.timeout(max(180, examples // 10))
