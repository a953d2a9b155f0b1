"""SimConfig: every knob of one experiment, with defaults; only cli.py reads flags."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from simulations.churn import KillSpec, SessionModel, SpecError, parse_kill, parse_session

__all__ = ["SimConfig", "SCENARIOS", "IMPLS", "RUNNERS", "INTERVALS", "WARMUPS",
           "parse_latency", "parse_rate"]

SCENARIOS = ("steady", "churn", "mass-failure", "flash-crowd")
IMPLS = ("kadshare", "kademlia", "tracker")
RUNNERS = ("inproc", "process", "netns", "virtual", "docker")
INTERVALS = ("tests", "production")
WARMUPS = ("join", "direct")

DEFAULT_SESSION = "weibull:0.5,60"
DEFAULT_LOOKUP_TIMEOUT = 10.0


def parse_latency(spec: str) -> tuple[float, float]:
    """Parse ``20-80ms`` / ``50ms`` / ``0`` into (low, high) seconds of one-way delay."""
    text = spec.strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text, scale = text[:-2], 1e-3
    elif text.endswith("s"):
        text = text[:-1]
    else:
        scale = 1e-3  # bare numbers are milliseconds
    lo, sep, hi = text.partition("-")
    try:
        low = float(lo) * scale
        high = float(hi) * scale if sep else low
    except ValueError as exc:
        raise SpecError(f"latency {spec!r}: use LOW-HIGHms, e.g. 20-80ms") from exc
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < low or high > 10:
        raise SpecError(f"latency {spec!r}: need 0 <= LOW <= HIGH <= 10 s")
    return low, high


def parse_rate(spec: str) -> float:
    """Parse an uplink rate in bits per second: ``10M``, ``512k``, ``1G``, ``0`` = unlimited."""
    text = spec.strip().lower().removesuffix("bit/s").removesuffix("bps")
    mult = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:], 1.0)
    if mult != 1.0:
        text = text[:-1]
    try:
        value = float(text) * mult
    except ValueError as exc:
        raise SpecError(f"rate {spec!r}: use e.g. 10M (bits per second) or 0") from exc
    if not math.isfinite(value) or value < 0 or (0 < value < 1e3):
        raise SpecError(f"rate {spec!r}: need 0 (unlimited) or at least 1k bit/s")
    return value


@dataclass(frozen=True)
class SimConfig:
    """One experiment. Times are seconds of wall-clock time after warm-up."""

    scenario: str = "steady"
    nodes: int = 30
    duration: float = 30.0
    seed: int = 1
    runner: str = "inproc"
    impl: str = "kadshare"
    session: SessionModel = field(default_factory=lambda: parse_session(DEFAULT_SESSION))
    kill: KillSpec | None = None
    kill_tracker: float | None = None
    lookup_rate: float = 5.0          # lookups per second, network-wide (Poisson)
    files: int = 20                   # distinct files in the workload
    providers: int = 3                # providers per file at start
    zipf: float = 1.0                 # Zipf exponent of file popularity
    graceful: float = 0.5             # fraction of churn departures that leave gracefully
    downtime: float = 1.0             # mean seconds before a churned slot is refilled
    latency: tuple[float, float] = (0.0, 0.0)
    loss: float = 0.0
    lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT
    join_concurrency: int = 16
    warmup: str = "join"              # join: real joins; direct: converged tables (warmup.py)
    settle: float = 0.0               # quiet seconds between warm-up and the measured run
    fetch: bool = False               # also download found files over gRPC (real peers)
    proc_delay: float = 0.0002        # virtual runner: seconds a node spends per datagram
    uplink: float = 10e6              # virtual runner: uplink bits/s per node (0 = unlimited)
    intervals: str = "tests"          # kadshare DhtConfig: for_tests() or production
    crowd_size: int = 0               # flash-crowd: bytes of the crowd's file (0: drawn)
    upload_rate: int = 0              # real peers: --max-upload-rate, bytes/s (0: none)
    progress: bool = True

    def validate(self) -> SimConfig:
        """Raise SpecError with a sentence for any value out of range; return self."""
        if self.scenario not in SCENARIOS:
            raise SpecError(f"unknown scenario {self.scenario!r} ({', '.join(SCENARIOS)})")
        if self.impl not in IMPLS:
            raise SpecError(f"unknown impl {self.impl!r} ({', '.join(IMPLS)})")
        if self.runner not in RUNNERS:
            raise SpecError(f"unknown runner {self.runner!r} ({', '.join(RUNNERS)})")
        limit = 20000 if self.runner == "virtual" else 5000
        if not 2 <= self.nodes <= limit:
            raise SpecError(f"--nodes must be between 2 and {limit} with runner {self.runner}")
        if not 1 <= self.duration <= 86400:
            raise SpecError("--duration must be between 1 and 86400 seconds")
        if not 0 <= self.lookup_rate <= 10000:
            raise SpecError("--lookup-rate must be between 0 and 10000 per second")
        if not 1 <= self.files <= 100000:
            raise SpecError("--files must be between 1 and 100000")
        if not 1 <= self.providers <= self.nodes:
            raise SpecError("--providers must be between 1 and --nodes")
        if not 0 <= self.zipf <= 10:
            raise SpecError("--zipf must be between 0 and 10")
        if not 0 <= self.loss < 1:
            raise SpecError("--loss must be in [0, 1)")
        if not 0 <= self.graceful <= 1:
            raise SpecError("--graceful must be in [0, 1]")
        if not 0.1 <= self.lookup_timeout <= 120:
            raise SpecError("--lookup-timeout must be between 0.1 and 120 s")
        if not 0 <= self.settle <= 3600:
            raise SpecError("--settle must be between 0 and 3600 seconds")
        if self.intervals not in INTERVALS:
            raise SpecError(f"--intervals must be one of {', '.join(INTERVALS)}")
        if self.warmup not in WARMUPS:
            raise SpecError(f"--warmup must be one of {', '.join(WARMUPS)}")
        if self.warmup == "direct" and self.runner not in ("virtual", "inproc"):
            raise SpecError("--warmup direct needs every node in this process "
                            "(--runner virtual or inproc)")
        if not 0 <= self.proc_delay <= 1:
            raise SpecError("--proc-delay must be between 0 and 1 s")
        if not 0 <= self.crowd_size <= 2**34 or self.upload_rate < 0:
            raise SpecError("--crowd-size must be 0..16G and --max-upload-rate >= 0")
        if self.kill_tracker is not None and not 0 <= self.kill_tracker:
            raise SpecError("--kill-tracker must be >= 0 seconds")
        return self

    def with_changes(self, **changes: Any) -> SimConfig:
        """Return a validated copy with some fields replaced."""
        return replace(self, **changes).validate()

    def to_json(self) -> dict:
        """JSON-able dict (session and kill as their spec strings)."""
        d = asdict(self)
        d["session"] = self.session.spec()
        d["kill"] = f"{self.kill.fraction:g}@{self.kill.at:g}" if self.kill else None
        d["latency"] = list(self.latency)
        return d

    @classmethod
    def from_json(cls, d: dict) -> SimConfig:
        """Inverse of to_json (unknown keys ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["session"] = parse_session(kw.get("session") or DEFAULT_SESSION)
        kw["kill"] = parse_kill(kw["kill"]) if kw.get("kill") else None
        kw["latency"] = tuple(kw.get("latency") or (0.0, 0.0))
        return cls(**kw)
