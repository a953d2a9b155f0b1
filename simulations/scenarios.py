"""Scenarios turn a SimConfig into a Trace: every join, departure, kill and lookup,
with its time, drawn from one seeded RNG so that the same seed gives the same trace.

A trace is plain JSON (``Trace.save`` / ``Trace.load``), so an experiment can be replayed
exactly, or the same trace run against several impls (``kadshare-sim compare``).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from kadcommon.merkle import file_id_of_bytes
from simulations.config import SimConfig

__all__ = ["FileSpec", "Trace", "build_trace", "file_content", "TraceError"]

TRACE_VERSION = 1
_WORDS = (
    "holiday photos lecture notes music live concert dataset backup linux iso paper "
    "draft video raw scan thesis report slides recipe garden map"
).split()
_WARM = 2.0   # a node must have been up this long before the trace makes it look up


class TraceError(ValueError):
    """A trace file that cannot be read or does not fit this harness."""


@dataclass(frozen=True)
class FileSpec:
    """One shared file of the workload; its content is derived, its id its Merkle file id."""

    index: int
    file_id: str
    name: str
    size: int


def file_content(seed: int, index: int, size: int) -> bytes:
    """Deterministic content of workload file ``index`` (so its file id is stable)."""
    line = f"kadshare-sim seed={seed} file={index}\n".encode()
    reps = size // len(line) + 1
    return (line * reps)[:size]


@dataclass
class Trace:
    """Everything that happens in a run, in time order; ``config`` is how it was made."""

    config: SimConfig
    files: list[FileSpec]
    initial: list[dict]            # [{"node": i, "files": [file index, ...]}]
    events: list[dict]             # [{"t", "op", "node"?, "file"?, "files"?}]
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-able form; ``Trace.from_json`` reads it back."""
        return {
            "version": TRACE_VERSION,
            "config": self.config.to_json(),
            "files": [f.__dict__ for f in self.files],
            "initial": self.initial,
            "events": self.events,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict) -> Trace:
        """Parse a trace dict, with a clear TraceError for anything malformed."""
        try:
            if d.get("version") != TRACE_VERSION:
                raise TraceError(f"trace version {d.get('version')!r}, expected {TRACE_VERSION}")
            cfg = SimConfig.from_json(d["config"])
            files = [FileSpec(int(f["index"]), str(f["file_id"]), str(f["name"]),
                              int(f["size"])) for f in d["files"]]
            initial = [{"node": int(n["node"]), "files": [int(x) for x in n["files"]]}
                       for n in d["initial"]]
            events = [dict(e) for e in d["events"]]
            for e in events:
                float(e["t"])
                if e["op"] not in ("join", "leave", "crash", "lookup", "kill_tracker"):
                    raise TraceError(f"unknown trace op {e['op']!r}")
        except TraceError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TraceError(f"malformed trace: {exc!r}") from exc
        return cls(cfg, files, initial, events, dict(d.get("meta", {})))

    def save(self, path: Path) -> None:
        """Write the trace as JSON (atomically)."""
        tmp = Path(str(path) + ".part")
        tmp.write_text(json.dumps(self.to_json(), separators=(",", ":")))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Trace:
        """Read a trace written by ``save``."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise TraceError(f"cannot read trace {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise TraceError(f"trace {path} is not a JSON object")
        return cls.from_json(data)

    def digest(self) -> str:
        """sha256 of the canonical JSON: equal digests mean identical traces."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def node_count(self) -> int:
        """Distinct nodes that ever exist in the trace."""
        ids = {n["node"] for n in self.initial}
        ids.update(e["node"] for e in self.events if e["op"] == "join")
        return len(ids)


def _make_files(cfg: SimConfig, rng: random.Random) -> list[FileSpec]:
    files = []
    for i in range(cfg.files):
        size = rng.randint(1024, 16 * 1024)
        if i == 0 and cfg.scenario == "flash-crowd" and cfg.crowd_size:
            size = cfg.crowd_size  # the crowd's file (drawn all the same: same rng path)
        words = rng.sample(_WORDS, 2)
        name = f"{words[0]} {words[1]} {i:04d}.dat"
        fid = file_id_of_bytes(file_content(cfg.seed, i, size))
        files.append(FileSpec(i, fid, name, size))
    return files


def _zipf_cum(n: int, s: float) -> list[float]:
    cum, total = [], 0.0
    for rank in range(1, n + 1):
        total += 1.0 / rank**s
        cum.append(total)
    return cum


def build_trace(cfg: SimConfig) -> Trace:
    """Draw the complete, seeded trace for ``cfg``."""
    cfg.validate()
    rng = random.Random(f"kadshare-sim/{cfg.seed}")
    files = _make_files(cfg, rng)
    n = cfg.nodes
    # Provider assignment: each file gets `providers` distinct initial slots.
    slot_files: list[list[int]] = [[] for _ in range(n)]
    for f in range(cfg.files):
        for slot in rng.sample(range(n), cfg.providers):
            slot_files[slot].append(f)
    initial = [{"node": i, "files": sorted(slot_files[i])} for i in range(n)]
    events: list[dict] = []
    # Node lifetimes [join, end) for choosing lookup origins.
    life: dict[int, list[float]] = {i: [-1e9, float("inf")] for i in range(n)}
    next_id = n
    dur = cfg.duration

    if cfg.scenario == "churn":
        for slot in range(n):
            node = slot
            # Initial nodes are mid-session: residual time = session * U(0,1).
            t = cfg.session.sample(rng) * rng.random()
            for _ in range(10000):   # bounded: sessions are > 1 ms
                if t >= dur:
                    break
                op = "leave" if rng.random() < cfg.graceful else "crash"
                events.append({"t": round(t, 4), "op": op, "node": node})
                life[node][1] = t
                t += rng.expovariate(1.0 / cfg.downtime) if cfg.downtime > 0 else 0.0
                if t >= dur:
                    break
                node, next_id = next_id, next_id + 1
                events.append({"t": round(t, 4), "op": "join", "node": node,
                               "files": sorted(slot_files[slot])})
                life[node] = [t, float("inf")]
                t += cfg.session.sample(rng)
    kill = cfg.kill
    if cfg.scenario == "mass-failure" and kill is None:
        from simulations.churn import KillSpec

        kill = KillSpec(0.5, round(dur / 3, 3))
    if kill is not None:
        alive = sorted(i for i, (a, b) in life.items() if a <= kill.at < b)
        victims = rng.sample(alive, int(round(kill.fraction * len(alive))))
        for v in sorted(victims):
            events.append({"t": kill.at, "op": "crash", "node": v})
            life[v][1] = min(life[v][1], kill.at)
    if cfg.scenario == "flash-crowd":
        t0 = round(dur / 3, 3)
        for _ in range(max(1, n // 2)):
            node, next_id = next_id, next_id + 1
            events.append({"t": t0, "op": "join", "node": node, "files": []})
            # The crowd all want the most popular file, right after joining.
            events.append({"t": t0, "op": "lookup", "node": node, "file": 0, "crowd": True})
            life[node] = [t0, float("inf")]
    if cfg.kill_tracker is not None:
        events.append({"t": cfg.kill_tracker, "op": "kill_tracker"})

    # Background lookups: Poisson, Zipf popularity, origin = a warm live node.
    cum = _zipf_cum(cfg.files, cfg.zipf)
    t = 0.5
    for _ in range(int(cfg.lookup_rate * dur * 4) + 10):
        if cfg.lookup_rate <= 0:
            break
        t += rng.expovariate(cfg.lookup_rate)
        if t >= dur:
            break
        cands = [i for i, (a, b) in life.items() if a + _WARM <= t and t + 1.0 < b]
        if not cands:
            continue
        node = rng.choice(sorted(cands))
        f = rng.choices(range(cfg.files), cum_weights=cum)[0]
        events.append({"t": round(t, 4), "op": "lookup", "node": node, "file": f})

    order = {"kill_tracker": 0, "crash": 1, "leave": 2, "join": 3, "lookup": 4}
    events.sort(key=lambda e: (e["t"], order[e["op"]], e.get("node", -1)))
    meta = {"nodes_total": next_id, "kill": f"{kill.fraction:g}@{kill.at:g}" if kill else None}
    return Trace(cfg, files, initial, events, meta)
