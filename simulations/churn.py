"""Churn models: session-time distributions and the kill spec.

Session times follow Stutzbach & Rejaie (2006): heavy-tailed Weibull with shape
0.34-0.59 fits measured peer-to-peer sessions far better than an exponential, so the
default is Weibull; exponential and Pareto are offered for comparison.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["SessionModel", "KillSpec", "parse_session", "parse_kill", "SpecError"]


class SpecError(ValueError):
    """A malformed --session/--kill/--latency spec; the message says what is expected."""


@dataclass(frozen=True)
class SessionModel:
    """A session-time distribution in seconds.

    kind: "weibull" (k = shape, scale), "exp" (mean) or "pareto" (a = shape, xm = minimum).
    """

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        """Draw one session length (seconds, > 0) from the seeded ``rng``."""
        if self.kind == "weibull":
            return max(1e-3, rng.weibullvariate(self.b, self.a))
        if self.kind == "exp":
            return max(1e-3, rng.expovariate(1.0 / self.a))
        # Pareto with minimum xm: xm * U^(-1/a)
        return self.b * rng.paretovariate(self.a)

    def mean(self) -> float:
        """Expected session length (inf for Pareto with a <= 1)."""
        if self.kind == "weibull":
            return self.b * math.gamma(1.0 + 1.0 / self.a)
        if self.kind == "exp":
            return self.a
        return math.inf if self.a <= 1 else self.a * self.b / (self.a - 1)

    def spec(self) -> str:
        """The spec string that parses back into this model."""
        if self.kind == "weibull":
            return f"weibull:{self.a:g},{self.b:g}"
        if self.kind == "exp":
            return f"exp:{self.a:g}"
        return f"pareto:{self.a:g},{self.b:g}"


def _floats(text: str, n: int, spec: str) -> list[float]:
    parts = text.split(",")
    if len(parts) != n:
        raise SpecError(f"session spec {spec!r}: expected {n} number(s) after ':'")
    try:
        vals = [float(p) for p in parts]
    except ValueError as exc:
        raise SpecError(f"session spec {spec!r}: not a number") from exc
    if any(not math.isfinite(v) or v <= 0 for v in vals):
        raise SpecError(f"session spec {spec!r}: numbers must be positive")
    return vals


def parse_session(spec: str) -> SessionModel:
    """Parse ``weibull:k,scale`` | ``exp:mean`` | ``pareto:a,xm`` (seconds)."""
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if not sep:
        raise SpecError(f"session spec {spec!r}: use weibull:k,scale | exp:mean | pareto:a,xm")
    if kind == "weibull":
        k, scale = _floats(rest, 2, spec)
        return SessionModel("weibull", k, scale)
    if kind == "exp":
        (mean,) = _floats(rest, 1, spec)
        return SessionModel("exp", mean)
    if kind == "pareto":
        a, xm = _floats(rest, 2, spec)
        return SessionModel("pareto", a, xm)
    raise SpecError(f"session spec {spec!r}: unknown kind {kind!r} (weibull, exp, pareto)")


@dataclass(frozen=True)
class KillSpec:
    """Crash ``fraction`` of the live nodes at once, ``at`` seconds into the run."""

    fraction: float
    at: float


def parse_kill(spec: str) -> KillSpec:
    """Parse ``FRACTION@T``, e.g. ``0.5@20`` (half the nodes crash at t = 20 s)."""
    frac, sep, at = spec.strip().partition("@")
    try:
        f, t = float(frac), float(at)
    except ValueError as exc:
        raise SpecError(f"kill spec {spec!r}: use FRACTION@SECONDS, e.g. 0.5@20") from exc
    if not sep or not (0.0 < f <= 1.0) or not math.isfinite(t) or t < 0:
        raise SpecError(f"kill spec {spec!r}: FRACTION in (0, 1], SECONDS >= 0")
    return KillSpec(f, t)
