"""Hypothesis profiles shared by every suite.

"ci" keeps ``make test`` fast (a few hundred examples per target); "long" is what
``make fuzz`` selects through ``HYPOTHESIS_PROFILE=long`` (100k+ examples per target).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=100_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
if os.environ.get("HYPOTHESIS_MAX_EXAMPLES"):  # e.g. a 10k run between "ci" and "long"
    settings.register_profile(
        "custom", settings.default, max_examples=int(os.environ["HYPOTHESIS_MAX_EXAMPLES"])
    )
    settings.load_profile("custom")
