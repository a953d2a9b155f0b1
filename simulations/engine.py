"""The engine plays a Trace against one impl on one runner and measures it.

Warm-up (not measured): the initial nodes join (bounded concurrency, each through up to
three random live nodes), or with ``--warmup direct`` start alone and are handed
converged routing tables (simulations/warmup.py); then all initial providers announce
at once. The measured
run then dispatches every trace event at its time; lookups, joins and graceful leaves
run as tasks so that a slow one never delays the clock. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.impls import ImplNode, make_impl
from simulations.metrics import LookupRecord, Recorder, Sample, percentile, progress_figures
from simulations.netmodel import NetModel, op_counter, traffic_tag
from simulations.runners import make_runner
from simulations.scenarios import FileSpec, Trace
from simulations.warmup import PREFILL_K, converged_contacts, warmup_rng

log = logging.getLogger(__name__)

__all__ = ["run_trace", "RunOutcome"]

JOIN_TIMEOUT = 30.0
LEAVE_TIMEOUT = 20.0
ANNOUNCE_TIMEOUT = 30.0
WARMUP_ANNOUNCE_CONCURRENCY = 256
RECORDS_EVERY_SEC_MAX_NODES = 200

#: ``run_trace(observe=...)``: (second of the measured run, nodes up) -> None
Observer = Callable[[int, list[ImplNode]], None]


# ---- one node's operations, shared with the sharded engine (simulations/sharded.py) ----
async def announce_quietly(idx: int, handle: ImplNode, f: FileSpec) -> bool:
    """Announce ``f`` from node ``idx``; False (logged at DEBUG) if it failed or timed out."""
    traffic_tag.set("announce")
    try:
        await asyncio.wait_for(handle.announce(f), ANNOUNCE_TIMEOUT)
    except Exception as exc:
        log.debug("node %d: announce of file %d failed: %r", idx, f.index, exc)
        return False
    return True


async def leave_or_crash(idx: int, handle: ImplNode) -> None:
    """A graceful leave, or a crash if the leave fails or takes too long."""
    try:
        await asyncio.wait_for(handle.leave(), LEAVE_TIMEOUT)
    except Exception as exc:
        log.debug("node %d: graceful leave failed (%r); crashing it", idx, exc)
        with contextlib.suppress(Exception):
            handle.crash()


def crash_quietly(idx: int, handle: ImplNode) -> None:
    try:
        handle.crash()
    except Exception as exc:
        log.debug("node %d: crash raised %r", idx, exc)


async def joined(st: Any) -> bool:
    """Whether node state ``st`` is up, waiting (bounded) for a join under way."""
    if st.state == "joining":
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(st.ready.wait(), JOIN_TIMEOUT)
    return bool(st.state == "up")


async def timed_lookup(handle: ImplNode, f: FileSpec, timeout: float
                       ) -> tuple[list[str], str, list[int]]:
    """One lookup with its traffic counted: (provider keys, error or "", [msgs, bytes])."""
    traffic_tag.set("lookup")
    ctr = [0, 0]
    op_counter.set(ctr)
    keys: list[str] = []
    err = ""
    try:
        keys = await asyncio.wait_for(handle.lookup(f), timeout)
    except asyncio.TimeoutError:
        err = "timeout"
    except Exception as exc:
        err = type(exc).__name__
    return keys, err, ctr


def events_in_run(trace: Trace, duration: float) -> Any:
    """The trace's events up to ``duration`` seconds after the measured run starts."""
    for ev in trace.events:
        if ev["t"] > duration:
            return
        yield ev


async def shut_down(tasks: Any, nodes: Any, runner: Any) -> None:
    """Cancel the engine's tasks, crash every node not gone, close the runner."""
    for t in list(tasks):
        t.cancel()
    for st in nodes.values():
        if st.state != "gone":
            with contextlib.suppress(Exception):
                st.handle.crash()
    await runner.close()


@dataclass
class _NodeState:
    handle: ImplNode
    state: str = "joining"            # joining | up | gone
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    up_at: float | None = None        # seconds since t0 (negative during warm-up)
    gone_at: float | None = None
    files: set[int] = field(default_factory=set)   # announced successfully


@dataclass
class RunOutcome:
    """What one run produced, ready for report.py."""

    impl: str
    runner: str
    summary: dict[str, Any]
    timeseries: list[dict]
    lookups: list[dict]
    marks: list[dict]
    traffic: dict[str, Any]
    warmup_s: float
    infra: dict[str, Any]
    join_failures: int
    #: "tls", "plaintext" or "none": how fetches travelled (the runner's ``transfers``)
    transfers: str = "none"
    #: Sharded runs: per rank, host readings of the run (``cpu_s`` of the measured
    #: phase, ``windows``, ``sync_s`` wall seconds in the window-end handover,
    #: ``hwm_kib`` peak RSS). Not written to results.json; benchmarks read it.
    shards: list[dict[str, Any]] | None = None


def _marks(trace: Trace) -> list[dict]:
    """Churn events worth a vertical line in the plots."""
    marks: list[dict] = []
    kills: dict[float, int] = {}
    crowd: dict[float, int] = {}
    for e in trace.events:
        if e["op"] == "kill_tracker":
            marks.append({"t": e["t"], "label": "tracker killed"})
        elif e["op"] == "lookup" and e.get("crowd"):
            crowd[e["t"]] = crowd.get(e["t"], 0) + 1
    kill = trace.meta.get("kill")
    if kill:
        frac, _, at = str(kill).partition("@")
        kills[float(at)] = 1
        marks.append({"t": float(at), "label": f"{float(frac):.0%} crashed"})
    for t, n in crowd.items():
        marks.append({"t": t, "label": f"flash crowd ({n} joins)"})
    return sorted(marks, key=lambda m: m["t"])


class NodeDepartures:
    """Leave and crash of a node by index, for both engines (each keeps its own node
    table and says, in ``_mark_gone``, which node that was still up)."""

    def _mark_gone(self, idx: int) -> Any:
        raise NotImplementedError

    async def leave(self, idx: int) -> None:
        st = self._mark_gone(idx)
        if st is None:
            return
        await leave_or_crash(idx, st.handle)

    def crash(self, idx: int) -> None:
        st = self._mark_gone(idx)
        if st is not None:
            crash_quietly(idx, st.handle)


class _Engine(NodeDepartures):
    def __init__(self, trace: Trace, impl_name: str, workdir: Path,
                 observe: Observer | None = None) -> None:
        self.trace = trace
        self.observe = observe
        self.cfg = trace.config.with_changes(impl=impl_name)
        self.impl = make_impl(impl_name)
        self.netmodel = NetModel(seed=self.cfg.seed, latency=self.cfg.latency,
                                 loss=self.cfg.loss)
        self.runner = make_runner(self.cfg, self.impl, self.netmodel, workdir)
        self.rng = warmup_rng(self.cfg.seed)   # bootstrap picks too, after the warm-up
        self.nodes: dict[int, _NodeState] = {}
        self.key_owner: dict[str, int] = {}
        self.file_live: dict[int, set[int]] = {f.index: set() for f in trace.files}
        self.rec = Recorder()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.t0 = 0.0
        self.loop = asyncio.get_running_loop()
        self.join_failures = 0
        self.lags: list[float] = []      # how late the 1 s ticker woke: loop overload
        self.progress = False
        self.cpu0 = 0.0
        self.warmup_sim_s = 0.0          # warm-up on the loop's clock (virtual or real)
        # Nodes up, in the order they came up: a join samples its bootstrap nodes here
        # instead of scanning every node (O(N) per join was 5 % of a 3,000-node warm-up).
        self.up_order: dict[int, None] = {}

    # ---- helpers -------------------------------------------------------------------
    def now(self) -> float:
        return self.loop.time() - self.t0

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _bootstrap_for(self, idx: int) -> list[tuple[str, int]]:
        up = list(self.up_order)
        if idx in self.up_order:
            up.remove(idx)
        if not up:
            return []
        picks = self.rng.sample(up, min(3, len(up)))
        return [self.nodes[i].handle.addr for i in picks]  # type: ignore[misc]  # handle is set once a node started

    def _mark_gone(self, idx: int) -> _NodeState | None:
        st = self.nodes.get(idx)
        if st is None or st.state == "gone":
            return None
        st.state = "gone"
        self.up_order.pop(idx, None)
        st.gone_at = self.now()
        for f in st.files:
            self.file_live[f].discard(idx)
        st.ready.set()
        return st

    # ---- node life -----------------------------------------------------------------
    async def join(self, idx: int, files: list[int], *, alone: bool = False) -> None:
        handle = await self.runner.spawn(idx)
        st = _NodeState(handle)
        self.nodes[idx] = st
        try:
            boot = [] if alone else self._bootstrap_for(idx)
            await asyncio.wait_for(handle.start(boot), JOIN_TIMEOUT)
        except Exception as exc:   # a failed join is a measured outcome, not a crash
            if st.state == "gone":      # the trace crashed it while it was joining
                return
            log.warning("node %d failed to join: %r", idx, exc)
            self.join_failures += 1
            self._mark_gone(idx)
            with contextlib.suppress(Exception):
                handle.crash()
            return
        self.key_owner[handle.provider_key] = idx
        if st.state == "gone":        # crashed by the trace while joining
            with contextlib.suppress(Exception):
                handle.crash()
            return
        st.state, st.up_at = "up", self.now()
        if handle.addr is not None:
            self.up_order[idx] = None
        st.ready.set()
        await asyncio.gather(*(self.announce(idx, self.trace.files[f]) for f in files))

    async def announce(self, idx: int, f: FileSpec) -> None:
        st = self.nodes[idx]
        if not await announce_quietly(idx, st.handle, f):
            return
        if st.state == "up":
            st.files.add(f.index)
            self.file_live[f.index].add(idx)

    async def lookup(self, ev: dict) -> None:
        idx, f = int(ev["node"]), self.trace.files[int(ev["file"])]
        st = self.nodes.get(idx)
        if st is None or st.state == "gone":
            self.rec.skipped += 1
            return
        if not await joined(st):
            self.rec.skipped += 1
            return
        t_start = self.now()
        live_start = set(self.file_live[f.index])
        keys, err, ctr = await timed_lookup(st.handle, f, self.cfg.lookup_timeout)
        latency = self.now() - t_start
        live = live_start & self.file_live[f.index]
        returned = {self.key_owner.get(k, -1 - n) for n, k in enumerate(set(keys))}
        found = returned & live
        fetched: bool | None = None
        fetch_s: float | None = None
        if self.cfg.fetch and found:
            live_keys = [k for k in set(keys) if self.key_owner.get(k) in found]
            t_f = self.now()
            try:
                fetched = await asyncio.wait_for(st.handle.fetch(f, live_keys),
                                                 self.cfg.lookup_timeout)
            except Exception:
                fetched = False
            fetch_s = self.now() - t_f
        self.rec.lookups.append(LookupRecord(
            t=round(t_start, 4), node=idx, file=f.index, eligible=bool(live_start),
            success=bool(found), latency=latency, returned=len(returned),
            stale=len(returned - self.file_live[f.index]), live=len(live),
            found_live=len(found), msgs=ctr[0], nbytes=ctr[1], error=err,
            crowd=bool(ev.get("crowd")), fetched=fetched,
            fetch_s=None if fetch_s is None else round(fetch_s, 4)))

    # ---- phases ----------------------------------------------------------------------
    async def warmup(self) -> None:
        initial = self.trace.initial
        if not initial:
            return
        if self.cfg.warmup == "direct":
            for n in initial:
                await self.join(n["node"], [], alone=True)
            self._prefill([n["node"] for n in initial])
        else:
            await self.join(initial[0]["node"], [])
            sem = asyncio.Semaphore(max(1, self.cfg.join_concurrency))

            async def one(n: dict) -> None:
                async with sem:
                    await self.join(n["node"], [])

            await asyncio.gather(*(one(n) for n in initial[1:]))
        # All initial providers announce at once, as users opening their clients would.
        asem = asyncio.Semaphore(WARMUP_ANNOUNCE_CONCURRENCY)

        async def ann(idx: int, fi: int) -> None:
            async with asem:
                if self.nodes[idx].state == "up":
                    await self.announce(idx, self.trace.files[fi])

        await asyncio.gather(*(ann(n["node"], fi) for n in initial for fi in n["files"]))

    def _prefill(self, idxs: list[int]) -> None:
        """Hand every started node of ``idxs`` its converged routing table."""
        handles = {i: self.nodes[i].handle for i in idxs if self.nodes[i].state == "up"}
        ids = {i: h.node_id for i, h in handles.items() if h.node_id is not None}
        if not ids:
            return
        tables = converged_contacts(ids, PREFILL_K, self.rng)
        for i, picks in tables.items():
            handles[i].prefill([(ids[j], handles[j].addr) for j in picks  # type: ignore[misc]  # started nodes have an address
                                if handles[j].addr is not None])

    def sample(self) -> None:
        up = [s for s in self.nodes.values() if s.state == "up"]
        sec = int(self.now())
        # Counting every node's records each second cost 9 % of a 1,000-node virtual
        # run; beyond RECORDS_EVERY_SEC_MAX_NODES nodes the mean is taken every 10 s
        # and carried forward in between.
        if len(self.nodes) > RECORDS_EVERY_SEC_MAX_NODES and sec % 10 and self.rec.samples:
            mean = self.rec.samples[-1].records_mean
        else:
            recs = 0.0
            for s in up:
                with contextlib.suppress(Exception):
                    recs += s.handle.records()
            mean = round(recs / len(up), 2) if up else 0.0
        self.rec.samples.append(Sample(sec, len(up), mean))

    def _prefix(self) -> str:
        return f"[{self.impl.name}/{self.runner.name}]"

    def _write_progress(self, line: str, *, final: bool = False) -> None:
        # On a terminal the line is rewritten in place; in a log, one line each time.
        tty = sys.stderr.isatty()
        sys.stderr.write(("\r" + line + ("\n" if final else "")) if tty else (line + "\n"))
        sys.stderr.flush()

    async def ticker(self, progress: bool) -> None:
        tty = sys.stderr.isatty()
        last_print = -10.0
        dur = self.cfg.duration
        wall0 = time.monotonic()
        for sec in range(int(dur) + 1):
            await asyncio.sleep(max(0.0, self.t0 + sec - self.loop.time()))
            self.lags.append(max(0.0, self.loop.time() - (self.t0 + sec)))
            self.sample()
            if self.observe is not None:
                self.observe(sec, [s.handle for s in self.nodes.values() if s.state == "up"])
            if progress and (tty or sec - last_print >= 10):
                last_print = sec
                # Wall-clock ETA from the pace so far (a virtual run goes faster than 1 s/s).
                pace = (time.monotonic() - wall0) / sec if sec else 1.0
                eta = max(0.0, dur - sec) * pace
                self._write_progress(
                    f"{self._prefix()} t={sec:4d}/{dur:g}s eta {eta:4.0f}s "
                    + progress_figures(self.rec.headline(), self.rec.samples[-1].alive))

    async def run(self, progress: bool) -> RunOutcome:
        w0, v0 = time.monotonic(), self.loop.time()
        self.progress = progress
        try:
            await self.runner.start()
            await self.warmup()
            if self.cfg.settle > 0:   # let the burst of initial announces settle
                await asyncio.sleep(self.cfg.settle)
            warmup_s = time.monotonic() - w0
            self.t0 = self.loop.time()
            self.warmup_sim_s = self.t0 - v0
            self.cpu0 = time.process_time()
            self.netmodel.traffic.t0 = self.t0
            for tag in list(self.netmodel.traffic.bytes):
                self.netmodel.traffic.bytes[tag] = 0
                self.netmodel.traffic.msgs[tag] = 0
            for st in self.nodes.values():
                if st.up_at is not None:
                    st.up_at = 0.0
            remote = [s.handle for s in self.nodes.values()
                      if s.state == "up" and s.handle.remote]
            if remote:
                await asyncio.gather(*(h.reset_counters() for h in remote))
            tick = asyncio.ensure_future(self.ticker(progress))
            await self.dispatch()
            # Let in-flight lookups finish, bounded by the lookup timeout.
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=self.cfg.lookup_timeout + 2)
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
            remote = [s.handle for s in self.nodes.values()
                      if s.state == "up" and s.handle.remote]
            if remote:
                await asyncio.gather(*(h.refresh() for h in remote))
            return self.outcome(warmup_s)
        except BaseException:
            if progress and sys.stderr.isatty():   # end the in-place line before the error
                sys.stderr.write("\n")
            raise
        finally:
            await shut_down(self.tasks, self.nodes, self.runner)

    async def dispatch(self) -> None:
        for ev in events_in_run(self.trace, self.cfg.duration):
            delay = self.t0 + ev["t"] - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            op = ev["op"]
            if op == "lookup":
                self._spawn_task(self.lookup(ev))
            elif op == "join":
                self._spawn_task(self.join(int(ev["node"]), list(ev.get("files", []))))
            elif op == "leave":
                self._spawn_task(self.leave(int(ev["node"])))
            elif op == "crash":
                self.crash(int(ev["node"]))
            elif op == "kill_tracker":
                await self.impl.kill_infra()
        await asyncio.sleep(max(0.0, self.t0 + self.cfg.duration - self.loop.time()))

    def outcome(self, warmup_s: float) -> RunOutcome:
        dur = self.cfg.duration
        node_s = 0.0
        for st in self.nodes.values():
            if st.up_at is None:
                continue
            end = st.gone_at if st.gone_at is not None else dur
            node_s += max(0.0, min(end, dur) - max(0.0, st.up_at))
        traffic = self.netmodel.traffic
        maint = traffic.bytes.get("maintenance", 0)
        maint += sum(s.handle.maintenance_bytes() for s in self.nodes.values())
        counted = all(s.handle.counts_traffic for s in self.nodes.values())
        marks = _marks(self.trace)
        summary = self.rec.summary(node_seconds=node_s, maintenance_bytes=maint,
                                   duration=dur, marks=[m["t"] for m in marks])
        up = [s for s in self.nodes.values() if s.state == "up"]
        recs = []
        for s in up:
            with contextlib.suppress(Exception):
                recs.append(s.handle.records())
        summary["records_per_node_mean"] = round(sum(recs) / len(recs), 2) if recs else 0.0
        summary["records_per_node_max"] = max(recs) if recs else 0
        summary["alive_end"] = len(up)
        summary["join_failures"] = self.join_failures
        summary["warmup_s"] = round(warmup_s, 2)
        summary["warmup_sim_s"] = round(self.warmup_sim_s, 3)
        # Validity of the run itself: a starved harness loop delays every node in it.
        lag50, lag_max = percentile(self.lags, 50), max(self.lags, default=0.0)
        summary["loop_lag_p50_ms"] = round((lag50 or 0.0) * 1000, 1)
        summary["loop_lag_max_ms"] = round(lag_max * 1000, 1)
        summary["harness_cpu_fraction"] = round((time.process_time() - self.cpu0) / dur, 3)
        if not counted:   # real kadshare-node processes: their datagrams are not visible
            for key in ("maintenance_bytes_per_node_s", "msgs_per_lookup", "bytes_per_lookup"):
                summary[key] = None
        if self.progress:   # the final window, from the very figures of the table
            extra = max(0.0, self.now() - dur)
            self._write_progress(
                f"{self._prefix()} done {dur:g}/{dur:g}s (+{extra:.1f}s for lookups in "
                f"flight) " + progress_figures(summary, len(up)), final=True)
        return RunOutcome(
            impl=self.impl.name, runner=self.runner.name, summary=summary,
            timeseries=self.rec.timeseries(dur, traffic.per_second),
            lookups=self.rec.lookup_rows(), marks=marks, traffic=traffic.snapshot(),
            warmup_s=warmup_s, infra=self.impl.infra_stats(),
            join_failures=self.join_failures, transfers=self.runner.transfers)


async def run_trace(trace: Trace, impl_name: str, *, progress: bool = False,
                    workdir: Path | None = None, observe: Observer | None = None
                    ) -> RunOutcome:
    """Play ``trace`` against ``impl_name`` with the runner named in its config.

    ``observe(second, up_nodes)`` is called once per simulated second of the measured
    run (after that second's sample) and must not change anything."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="kadshare-sim-") as tmp:
            return await _Engine(trace, impl_name, Path(tmp), observe).run(progress)
    return await _Engine(trace, impl_name, workdir, observe).run(progress)
