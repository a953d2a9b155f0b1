"""``kadshare-sim run --runner virtual`` sharded over MPI ranks (conservative PDES).

The engine (simulations/engine.py) keeps global state on the fly: which nodes are up to
bootstrap from, which files are live, a warm-up whose joins wait on a shared semaphore.
None of that exists across processes, so the sharded engine takes every such decision
from the deterministic schedule instead, and measures from records gathered at the end:

* warm-up: initial node ``k`` starts joining at ``k * JOIN_GAP`` virtual seconds (with
  ``--warmup direct``: every initial node starts alone at 0 with the converged routing
  table one process would hand it, drawn identically on every rank from ids derived
  from the seed, simulations/warmup.py), the initial providers announce from a fixed
  time on (``ANNOUNCE_GAP`` apart), and the measured run starts at a fixed ``t0``;
* bootstrap picks: up to three nodes the *schedule* says are up (joined at least
  ``BOOT_GRACE`` seconds ago and not yet gone), drawn from a per-join seeded RNG;
* every node has its own ``contextvars`` context with its own seeded ``dht`` RNG (and,
  for the plain ``kademlia`` package, its own ``random.Random``); its tasks and every
  datagram delivered to it run there (simulations/mpi.py's ``ShardedNetwork``);
* a rank runs only the trace events of its nodes (node ``i`` on rank ``i % size``);
* lookup success is computed on rank 0 from the gathered announce and departure times
  (a provider is live at ``t`` when it announced the file by ``t`` and was not gone),
  exactly as the engine's ``file_live`` sets would say at those instants;
* the run ends at the fixed time ``t0 + duration + lookup_timeout + 2``.

The results (samples, lookups, traffic, node-seconds) are gathered on rank 0, sorted,
and written as one process writes them. The digest therefore does not depend on the
number of ranks: ``mpirun -n K kadshare-sim run ... --runner virtual`` gives the digest
of ``kadshare-sim run ... --runner virtual --sharded`` in one process. It is *not* the
digest of the plain one-process run, whose warm-up and bootstrap picks follow live state.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import heapq
import importlib
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.engine import (
    ANNOUNCE_TIMEOUT,
    JOIN_TIMEOUT,
    RECORDS_EVERY_SEC_MAX_NODES,
    NodeDepartures,
    RunOutcome,
    _marks,
    announce_quietly,
    events_in_run,
    joined,
    shut_down,
    timed_lookup,
)
from simulations.impls import ImplNode, make_impl
from simulations.metrics import LookupRecord, Recorder, Sample, progress_figures
from simulations.mpi import Shard, ShardedNetwork, _next_timer
from simulations.netmodel import NetModel, Traffic
from simulations.runners.virtual import VirtualRunner, _TimeShim, host_for
from simulations.scenarios import FileSpec, Trace
from simulations.vloop import VirtualTimeLoop
from simulations.vnet import FIRST_PORT
from simulations.warmup import PREFILL_K, converged_contacts, warmup_rng

log = logging.getLogger(__name__)

__all__ = ["run_sharded", "ShardingUnsupported", "SHARDABLE"]

JOIN_GAP = 0.05          # virtual seconds between initial joins
ANNOUNCE_GAP = 0.005     # between initial providers' announces
BOOT_GRACE = 2.0         # a node counts as up for bootstrap this long after it joined
DIRECT_ANNOUNCE = 1.0    # --warmup direct: the initial announces start this much later
SHARDABLE = ("kadshare", "kademlia")

# The plain kademlia package draws from the global ``random`` module; under sharding
# each node draws from its own generator, held here.
_node_random: contextvars.ContextVar[random.Random] = contextvars.ContextVar("node_random")
_KADEMLIA_RANDOM_MODULES = ("kademlia.network", "kademlia.protocol")


class _SeqTimerHandle(asyncio.TimerHandle):
    """A timer that breaks ties by creation order: heapq alone orders equal times by
    the heap's history, which depends on the other nodes' timers in this process."""

    __slots__ = ("_seq",)
    _seq: int

    def __lt__(self, other: object) -> bool:
        if isinstance(other, _SeqTimerHandle):
            return (self.when(), self._seq) < (other.when(), other._seq)
        if isinstance(other, asyncio.TimerHandle):
            return self.when() < other.when()
        return NotImplemented


class _ShardLoop(VirtualTimeLoop):
    """The virtual-time loop of one shard: equal-time timers fire in creation order, so
    one node's timers keep their order whichever nodes share the process."""

    def __init__(self) -> None:
        super().__init__()
        self._timer_seq = 0

    # asyncio runs every timer due before ``now + _clock_resolution`` (1 ns) in one
    # batch, and all of them see the clock of the earliest: a node's event 0.5 ns after
    # another node's then read a time that depends on whether that other node shares
    # its process (1,000 nodes x 0.25 h: a different digest on 1 and 2 ranks). One ulp
    # of the clock batches only the timers due exactly now.
    @property
    def _clock_resolution(self) -> float:
        return math.ulp(self._vtime)

    @_clock_resolution.setter
    def _clock_resolution(self, value: float) -> None:
        pass

    def call_at(self, when: Any, callback: Any, *args: Any,  # type: ignore[override]
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()  # type: ignore[attr-defined]  # asyncio internals
        timer = _SeqTimerHandle(when, callback, args, self, context)
        self._timer_seq += 1
        timer._seq = self._timer_seq
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]  # asyncio's heap
        timer._scheduled = True  # type: ignore[attr-defined]  # asyncio internals
        return timer


class ShardingUnsupported(ValueError):
    """This run cannot be sharded (one-line reason)."""


class _PerNodeRandom:
    """Stands in for the ``random`` module: each node's context has its own Random."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_node_random.get(), name)


@dataclass
class _Node:
    handle: ImplNode
    state: str = "joining"
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    up_at: float | None = None        # absolute loop time
    gone_at: float | None = None
    announced: dict[int, float] = field(default_factory=dict)   # file -> time, while up
    join_failed: bool = False


class _ShardedEngine(NodeDepartures):
    def __init__(self, trace: Trace, impl_name: str, workdir: Path, shard: Shard,
                 loop: VirtualTimeLoop) -> None:
        self.trace, self.shard, self.loop = trace, shard, loop
        self.cfg = trace.config.with_changes(impl=impl_name)
        self.impl = make_impl(impl_name)
        self.netmodel = NetModel(seed=self.cfg.seed, latency=self.cfg.latency,
                                 loss=self.cfg.loss)
        self.runner = VirtualRunner(self.cfg, self.impl, self.netmodel, workdir)
        self.nodes: dict[int, _Node] = {}
        self.contexts: dict[int, contextvars.Context] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.raw_lookups: list[dict] = []
        self.skipped = 0
        self.samples: list[tuple[int, int, float]] = []   # (sec, up, records sum)
        self.warmup_wall = 0.0           # wall seconds of the warm-up (host reading)
        self.cpu0 = 0.0
        initial = [int(n["node"]) for n in trace.initial]
        self.initial = initial
        n = len(initial)
        v0 = self.v0 = loop.time()   # every time below is on the loop's clock
        self.direct = self.cfg.warmup == "direct"
        # Initial node k starts at join_at[k]: one after another, or all at once alone.
        gap = 0.0 if self.direct else JOIN_GAP
        self.join_at = [v0 + k * gap for k in range(n)]
        self.ann_at = v0 + (DIRECT_ANNOUNCE if self.direct else n * JOIN_GAP + JOIN_TIMEOUT)
        n_ann = sum(len(x["files"]) for x in trace.initial)
        self.t0 = self.ann_at + n_ann * ANNOUNCE_GAP + ANNOUNCE_TIMEOUT + self.cfg.settle
        self.end = self.t0 + self.cfg.duration + self.cfg.lookup_timeout + 2
        # The schedule: when each node is presumed up (for bootstrap picks) and gone.
        self.sched_up: dict[int, float] = {idx: self.join_at[k] + BOOT_GRACE
                                           for k, idx in enumerate(initial)}
        self.sched_gone: dict[int, float] = {}
        self.spawns: list[float] = list(self.join_at)
        for ev in trace.events:
            if ev["t"] > self.cfg.duration:
                break
            t = self.t0 + ev["t"]
            if ev["op"] == "join":
                self.sched_up.setdefault(int(ev["node"]), t + BOOT_GRACE)
                self.spawns.append(t)
            elif ev["op"] in ("leave", "crash"):
                self.sched_gone.setdefault(int(ev["node"]), t)
        self.spawns.sort()

    # ---- schedule ----------------------------------------------------------------
    def mine(self, idx: int) -> bool:
        return self.shard.owner(idx) == self.shard.rank

    def _bootstrap_for(self, idx: int, at: float) -> list[tuple[str, int]]:
        up = [i for i, u in self.sched_up.items()
              if i != idx and u <= at and self.sched_gone.get(i, math.inf) > at]
        if not up and idx != self.initial[0]:
            up = [self.initial[0]]
        up.sort()
        rng = random.Random(f"engine/{self.cfg.seed}/boot/{idx}/{at:.6f}")
        return [(host_for(i), FIRST_PORT) for i in rng.sample(up, min(3, len(up)))]

    def _context(self, idx: int) -> contextvars.Context:
        ctx = self.contexts.get(idx)
        if ctx is None:
            from dht import clock

            ctx = contextvars.copy_context()
            seed = self.cfg.seed
            ctx.run(clock.set_rng, random.Random(f"kadshare-sim/shard/{seed}/{idx}"))
            ctx.run(_node_random.set, random.Random(f"kadshare-sim/shard-rnd/{seed}/{idx}"))
            self.contexts[idx] = ctx
            assert isinstance(self.runner.network, ShardedNetwork)
            self.runner.network.node_context[host_for(idx)] = ctx
        return ctx

    def _spawn_task(self, idx: int, coro: Any) -> None:
        task = self._context(idx).run(self.loop.create_task, coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _at(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - self.loop.time()))

    # ---- node life (own nodes only) ---------------------------------------------------
    def _mark_gone(self, idx: int) -> _Node | None:
        st = self.nodes.get(idx)
        if st is None or st.state == "gone":
            return None
        st.state, st.gone_at = "gone", self.loop.time()
        st.ready.set()
        return st

    async def join(self, idx: int, files: list[int], at: float,
                   table: list[tuple[bytes, tuple[str, int]]] | None = None) -> None:
        """Start node ``idx`` at ``at``: through bootstrap nodes of the schedule, or,
        given its converged ``table`` (direct warm-up), alone with that table."""
        await self._at(at)
        handle = await self.runner.spawn(idx)
        st = _Node(handle)
        self.nodes[idx] = st
        try:
            boot = [] if table is not None else self._bootstrap_for(idx, at)
            await asyncio.wait_for(handle.start(boot), JOIN_TIMEOUT)
            if table is not None:
                handle.prefill(table)
        except Exception as exc:
            if st.state == "gone":
                return
            log.warning("node %d failed to join: %r", idx, exc)
            st.join_failed = True
            self._mark_gone(idx)
            with contextlib.suppress(Exception):
                handle.crash()
            return
        if st.state == "gone":
            with contextlib.suppress(Exception):
                handle.crash()
            return
        st.state, st.up_at = "up", self.loop.time()
        st.ready.set()
        await asyncio.gather(*(self.announce(idx, self.trace.files[f]) for f in files))

    async def announce(self, idx: int, f: FileSpec, at: float | None = None) -> None:
        if at is not None:
            await self._at(at)
        st = self.nodes.get(idx)
        if st is None or st.state != "up":
            return
        if not await announce_quietly(idx, st.handle, f):
            return
        if st.state == "up":
            st.announced.setdefault(f.index, self.loop.time())

    async def lookup(self, ev: dict) -> None:
        idx, f = int(ev["node"]), self.trace.files[int(ev["file"])]
        st = self.nodes.get(idx)
        if st is None or st.state == "gone":
            self.skipped += 1
            return
        if not await joined(st):
            self.skipped += 1
            return
        t_start = self.loop.time()
        keys, err, ctr = await timed_lookup(st.handle, f, self.cfg.lookup_timeout)
        self.raw_lookups.append({
            "t_start": t_start, "t_end": self.loop.time(), "node": idx, "file": f.index,
            "keys": sorted(set(keys)), "msgs": ctr[0], "nbytes": ctr[1], "error": err,
            "crowd": bool(ev.get("crowd"))})

    def direct_tables(self) -> dict[int, list[tuple[bytes, tuple[str, int]]]]:
        """This rank's initial nodes' converged tables, ``(id, address)`` pairs: the
        tables of every initial node are drawn (in one process the same draws fill
        them), this rank's are kept. Every node starts alone at once, so node ``j``
        is bound at ``(host_for(j), FIRST_PORT)``."""
        ids: dict[int, bytes] = {}
        for idx in self.initial:
            node_id = self.runner.node_id(idx)
            if node_id is None:
                raise ShardingUnsupported(
                    f"--warmup direct: impl {self.impl.name} has no seeded node ids")
            ids[idx] = node_id
        tables = converged_contacts(ids, PREFILL_K, warmup_rng(self.cfg.seed))
        return {i: [(ids[j], (host_for(j), FIRST_PORT)) for j in picks]
                for i, picks in tables.items() if self.mine(i)}

    # ---- phases ------------------------------------------------------------------------
    async def ticker(self) -> None:
        for sec in range(int(self.cfg.duration) + 1):
            await self._at(self.t0 + sec)
            up = [s for s in self.nodes.values() if s.state == "up"]
            spawned = bisect.bisect_right(self.spawns, self.t0 + sec)
            recs = 0.0
            if spawned <= RECORDS_EVERY_SEC_MAX_NODES or sec % 10 == 0:
                for s in up:
                    with contextlib.suppress(Exception):
                        recs += s.handle.records()
            self.samples.append((sec, len(up), recs))

    async def run(self) -> dict[str, Any]:
        wall0 = time.perf_counter()
        await self.runner.start()
        try:
            tables = self.direct_tables() if self.direct else {}
            for k, idx in enumerate(self.initial):
                if self.mine(idx):
                    self._spawn_task(idx, self.join(idx, [], self.join_at[k],
                                                    tables.get(idx)))
            k = 0
            for n in self.trace.initial:
                for fi in n["files"]:
                    idx = int(n["node"])
                    if self.mine(idx):
                        self._spawn_task(idx, self.announce(
                            idx, self.trace.files[fi], self.ann_at + k * ANNOUNCE_GAP))
                    k += 1
            await self._at(self.t0)
            self.warmup_wall = time.perf_counter() - wall0
            self.cpu0 = time.process_time()
            self.netmodel.traffic.t0 = self.t0
            for tag in list(self.netmodel.traffic.bytes):
                self.netmodel.traffic.bytes[tag] = 0
                self.netmodel.traffic.msgs[tag] = 0
            tick = asyncio.ensure_future(self.ticker())
            await self.dispatch()
            await self._at(self.end)
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
            return self.part()
        finally:
            await shut_down(self.tasks, self.nodes, self.runner)

    async def dispatch(self) -> None:
        for ev in events_in_run(self.trace, self.cfg.duration):
            op, idx = ev["op"], int(ev.get("node", -1))
            if op == "kill_tracker" or not self.mine(idx):
                continue
            await self._at(self.t0 + ev["t"])
            if op == "lookup":
                self._spawn_task(idx, self.lookup(ev))
            elif op == "join":
                self._spawn_task(idx, self.join(idx, list(ev.get("files", [])),
                                                 self.t0 + ev["t"]))
            elif op == "leave":
                self._spawn_task(idx, self.leave(idx))
            elif op == "crash":
                self._context(idx).run(self.crash, idx)

    def part(self) -> dict[str, Any]:
        """This rank's share of the results, plain data for the gather."""
        nodes = {}
        for idx, st in self.nodes.items():
            recs = None
            if st.state == "up":
                with contextlib.suppress(Exception):
                    recs = st.handle.records()
            nodes[idx] = {"up_at": st.up_at, "gone_at": st.gone_at, "state": st.state,
                          "announced": st.announced, "join_failed": st.join_failed,
                          "key": st.handle.provider_key if st.up_at is not None else None,
                          "maint": st.handle.maintenance_bytes(), "records": recs,
                          "counts": st.handle.counts_traffic}
        tr = self.netmodel.traffic
        return {"nodes": nodes, "lookups": self.raw_lookups, "skipped": self.skipped,
                "samples": self.samples, "traffic": {
                    "msgs": dict(tr.msgs), "bytes": dict(tr.bytes), "dropped": tr.dropped,
                    "per_second": dict(tr.per_second)}}


def _merge(engine: _ShardedEngine, parts: list[dict[str, Any]], warmup_s: float,
           progress: bool) -> RunOutcome:
    t0, dur = engine.t0, engine.cfg.duration
    # In node order, not rank order: float sums over nodes (node-seconds) must not
    # depend on how the nodes were split (1,000 nodes: the last bits of
    # maintenance_bytes_per_node_s differed between 1 and 2 ranks).
    nodes = dict(sorted((i, n) for p in parts for i, n in p["nodes"].items()))
    key_owner = {n["key"]: i for i, n in sorted(nodes.items()) if n["key"] is not None}

    # Per file, (announced, gone, node) of its providers: a lookup's live set looks at
    # these only (scanning every node per lookup took minutes at 10,000 nodes).
    providers: dict[int, list[tuple[float, float, int]]] = {}
    for i, n in nodes.items():
        gone = math.inf if n["gone_at"] is None else n["gone_at"]
        for f, at in n["announced"].items():
            providers.setdefault(int(f), []).append((at, gone, i))

    def live(f: int, t: float) -> set[int]:
        return {i for at, gone, i in providers.get(f, ()) if at <= t < gone}

    rec = Recorder()
    rec.skipped = sum(p["skipped"] for p in parts)
    raws = sorted((r for p in parts for r in p["lookups"]),
                  key=lambda r: (r["t_end"], r["t_start"], r["node"], r["file"]))
    for r in raws:
        live_start = live(r["file"], r["t_start"])
        live_end = live(r["file"], r["t_end"])
        alive = live_start & live_end
        returned = {key_owner.get(k, -1 - n) for n, k in enumerate(r["keys"])}
        found = returned & alive
        rec.lookups.append(LookupRecord(
            t=round(r["t_start"] - t0, 4), node=r["node"], file=r["file"],
            eligible=bool(live_start), success=bool(found), latency=r["t_end"] - r["t_start"],
            returned=len(returned), stale=len(returned - live_end), live=len(alive),
            found_live=len(found), msgs=r["msgs"], nbytes=r["nbytes"], error=r["error"],
            crowd=r["crowd"], fetched=None, fetch_s=None))
    by_sec: dict[int, list[float]] = {}
    for p in parts:
        for sec, up, recs in p["samples"]:
            acc = by_sec.setdefault(sec, [0, 0.0])
            acc[0] += up
            acc[1] += recs
    spawns = engine.spawns
    for sec in sorted(by_sec):
        up, recs = by_sec[sec]
        spawned = bisect.bisect_right(spawns, t0 + sec)
        if spawned > RECORDS_EVERY_SEC_MAX_NODES and sec % 10 and rec.samples:
            mean = rec.samples[-1].records_mean
        else:
            mean = round(recs / up, 2) if up else 0.0
        rec.samples.append(Sample(sec, int(up), mean))
    traffic = Traffic()
    traffic.t0 = t0
    for p in parts:
        tp = p["traffic"]
        for k, v in tp["msgs"].items():
            traffic.msgs[k] += v
        for k, v in tp["bytes"].items():
            traffic.bytes[k] += v
        for s, v in tp["per_second"].items():
            traffic.per_second[int(s)] += v
        traffic.dropped += tp["dropped"]
    node_s = 0.0
    for n in nodes.values():
        if n["up_at"] is None:
            continue
        up_at = max(0.0, n["up_at"] - t0)
        end = n["gone_at"] - t0 if n["gone_at"] is not None else dur
        node_s += max(0.0, min(end, dur) - up_at)
    maint = traffic.bytes.get("maintenance", 0) + sum(n["maint"] for n in nodes.values())
    marks = _marks(engine.trace)
    summary = rec.summary(node_seconds=node_s, maintenance_bytes=maint, duration=dur,
                          marks=[m["t"] for m in marks])
    up = [n for n in nodes.values() if n["state"] == "up"]
    recs_end = [n["records"] for n in up if n["records"] is not None]
    summary["records_per_node_mean"] = round(sum(recs_end) / len(recs_end), 2) if recs_end else 0.0
    summary["records_per_node_max"] = max(recs_end) if recs_end else 0
    summary["alive_end"] = len(up)
    summary["join_failures"] = sum(1 for n in nodes.values() if n["join_failed"])
    summary["warmup_s"] = round(warmup_s, 2)
    summary["warmup_sim_s"] = round(t0 - engine.v0, 3)
    summary["loop_lag_p50_ms"] = 0.0
    summary["loop_lag_max_ms"] = 0.0
    # CPU of every rank over the measured phase, per simulated second.
    cpu_s = sum(p["host"]["cpu_s"] for p in parts)
    summary["harness_cpu_fraction"] = round(cpu_s / dur, 3) if dur else 0.0
    if not all(n["counts"] for n in nodes.values()):
        for key in ("maintenance_bytes_per_node_s", "msgs_per_lookup", "bytes_per_lookup"):
            summary[key] = None
    if progress:
        sys.stderr.write(f"[{engine.impl.name}/virtual x{len(parts)} ranks] done "
                         + progress_figures(summary, len(up)) + "\n")
    return RunOutcome(
        impl=engine.impl.name, runner="virtual", summary=summary,
        timeseries=rec.timeseries(dur, traffic.per_second), lookups=rec.lookup_rows(),
        marks=marks, traffic=traffic.snapshot(), warmup_s=warmup_s,
        infra=engine.impl.infra_stats(), join_failures=summary["join_failures"],
        transfers="none", shards=[p["host"] for p in parts])


def check_shardable(trace: Trace, impl: str) -> None:
    cfg = trace.config
    if impl not in SHARDABLE:
        raise ShardingUnsupported(
            f"impl {impl} cannot be sharded (one central tracker); use "
            f"{' or '.join(SHARDABLE)}, or run it in one process")
    if cfg.runner != "virtual":
        raise ShardingUnsupported("sharding needs --runner virtual")
    if cfg.latency[0] <= 0:
        raise ShardingUnsupported("sharding needs a positive minimum --latency "
                                  "(the window length), e.g. --latency 20-80ms")
    if cfg.fetch:
        raise ShardingUnsupported("--fetch is not simulated under sharding")


def run_sharded(trace: Trace, impl_name: str, shard: Shard, *, progress: bool = False,
                workdir: Path | None = None) -> RunOutcome | None:
    """Run this rank's share of ``trace``; rank 0 returns the merged outcome."""
    check_shardable(trace, impl_name)
    import tempfile

    loop = _ShardLoop()
    asyncio.set_event_loop(loop)
    saved_random: list[tuple[Any, Any]] = []
    if impl_name == "kademlia":
        per_node = _PerNodeRandom()
        for name in _KADEMLIA_RANDOM_MODULES:
            mod = importlib.import_module(name)
            saved_random.append((mod, mod.random))
            mod.random = per_node  # type: ignore[attr-defined]
    tmp = tempfile.TemporaryDirectory(prefix="kadshare-sim-") if workdir is None else None
    wd = Path(tmp.name) if tmp is not None else workdir
    assert wd is not None
    engine = _ShardedEngine(trace, impl_name, wd, shard, loop)
    owners = {host_for(i): shard.owner(i) for i in range(_max_node(trace) + 1)}
    net = ShardedNetwork(loop, engine.netmodel, shard, owners,
                         proc_delay=trace.config.proc_delay, uplink_bps=trace.config.uplink)

    async def start() -> None:   # the VirtualRunner, with this rank's sharded network
        engine.runner.network = net
        engine.runner._random_state = random.getstate()
        engine.runner._shim = _TimeShim(loop)
        engine.runner._shim.install()
        loop.set_network(net)
        await engine.impl.setup(engine.runner.infra_host)

    engine.runner.start = start  # type: ignore[method-assign]
    window = trace.config.latency[0]
    main = loop.create_task(engine.run())
    windows, sync_s = 0, 0.0
    try:
        start_t = loop.time()
        while True:
            windows += 1
            loop.advance_to(start_t)
            w_end = start_t + window
            loop.call_at(w_end, loop.stop)
            loop.run_forever()
            loop.advance_to(w_end)
            done = main.done()
            s0 = time.perf_counter()
            earliest, all_done = net.boundary(
                math.inf if done else _next_timer(loop, math.inf), done)
            sync_s += time.perf_counter() - s0
            if all_done:
                break
            # Skip idle stretches: nothing happens on any rank before ``earliest``.
            start_t = max(w_end, earliest if earliest < math.inf else w_end)
        # Every rank takes part in the gather below, even one whose run failed, so that
        # no rank waits forever; the failure is raised after it.
        failed = main.exception() if not main.cancelled() else asyncio.CancelledError()
        part: dict[str, Any] = ({"error": repr(failed)} if failed is not None
                                else main.result())
        part["host"] = {"rank": shard.rank, "windows": windows, "sync_s": round(sync_s, 3),
                        "cpu_s": round(time.process_time() - engine.cpu0, 3),
                        "hwm_kib": _vm_kib("VmHWM")}
    finally:
        for t in asyncio.all_tasks(loop):
            t.cancel()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.sleep(0))
        asyncio.set_event_loop(None)
        loop.close()
        for mod, orig in saved_random:
            mod.random = orig
        if tmp is not None:
            tmp.cleanup()
    parts = shard.gather(part)
    if failed is not None:
        raise failed
    if parts is None:
        return None
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise RuntimeError(f"a shard failed: {errors[0]}")
    return _merge(engine, parts, engine.warmup_wall, progress)


def _vm_kib(field: str) -> int:
    """A ``/proc/self/status`` reading in KiB (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _max_node(trace: Trace) -> int:
    ids = [int(n["node"]) for n in trace.initial]
    ids += [int(e["node"]) for e in trace.events if "node" in e]
    return max(ids, default=0)
