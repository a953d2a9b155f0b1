"""Shards of one virtual-time simulation in several processes, over MPI (mpi4py).

Conservative parallel discrete-event simulation: node ``i`` lives on rank
``i % size``; every rank runs its own ``VirtualTimeLoop`` and ``VirtualNetwork`` for
its nodes, in windows of ``W`` virtual seconds with ``W`` no longer than the minimum
link latency. A datagram sent to another rank's node during a window cannot arrive
before the window ends, so it is buffered and handed over at the boundary (an
all-to-all exchange, ``Shard.exchange``); the receiving rank schedules its arrival at
the exact virtual time it would have had in one process.

The result must not depend on the number of ranks, so nothing may depend on which
other nodes share a process:

* every node has its own ``contextvars`` context holding its own seeded ``dht`` RNG;
  its tasks and every datagram delivered to it run there;
* loss is drawn per message from (seed, sender, sender's datagram number);
* the clock lands exactly on timer times (``VirtualTimeLoop._advance``), and
* per-node results are gathered on rank 0 and sorted by node before hashing.

Exact ties (two datagrams for one node at the same float instant) could still be
ordered differently; with per-pair latencies drawn from a continuous range they do not
occur in practice, and the test compares digests to catch it.

The workload (``run_workload``): ``nodes`` kadshare DHT nodes join one after another
through node 0, each announces one file, then each looks one file up; the digest covers
every node's join, announce and lookup outcome and latency. Run with
``mpirun -n K python -m simulations.mpi --nodes N`` (or without mpirun: one shard).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import hashlib
import heapq
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from simulations.netmodel import NetModel, traffic_tag
from simulations.runners.virtual import _secret, host_for
from simulations.scenarios import FileSpec
from simulations.vloop import VirtualTimeLoop
from simulations.vnet import VirtualDatagramTransport, VirtualNetwork

__all__ = ["Shard", "ShardedNetwork", "run_workload", "main", "mpirun_command", "MPIRUN_FLAGS"]

# Set by mpirun (Open MPI), by MPICH/Hydra and by Slurm's srun: the world size.
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")

# One in-flight cross-rank datagram: (arrive, src addr, src seq, dst addr, payload).
Parcel = tuple[float, tuple[str, int], int, tuple[str, int], bytes]


# Flags for ``mpirun -n K`` on one machine (Open MPI): more ranks than cores allowed,
# root allowed (containers), and idle ranks yield the CPU instead of spinning.
MPIRUN_FLAGS = ("--oversubscribe", "--allow-run-as-root", "--mca", "mpi_yield_when_idle", "1")


def mpirun_command(ranks: int) -> list[str]:
    """The ``mpirun -n K ...`` prefix the benchmarks launch K ranks on this machine with."""
    return ["mpirun", "-n", str(ranks), *MPIRUN_FLAGS]


WAIT_ENV = "KADSHARE_SIM_MPI_WAIT"
_WINDOW_TAG = 7
_POLL_SLEEP = 0.0001
#: Longest a rank waits at one window end for the others before it gives up: far above
#: any window's work (seconds at 10,000 nodes), so only a rank that died or hangs hits it.
WINDOW_WAIT_MAX = 900.0


def launched_ranks() -> int:
    """How many ranks mpirun/srun started (1 when not started by one)."""
    return max(int(os.environ.get(v) or 1) for v in _SIZE_VARS)


@dataclass
class Shard:
    """This process's place among the ranks; without MPI, the only shard."""

    rank: int = 0
    size: int = 1
    comm: Any = None
    #: How a rank waits for the others at a window end: "poll" (point-to-point sends,
    #: probed with short sleeps in between, so a waiting rank gives its core to whatever
    #: else runs: 1,000 nodes x 0.1 h on 2 ranks of a shared 2-core machine, 84.0 s
    #: against 112.3 s) or "spin" (one ``alltoall``; MPI polls, the core stays busy).
    #: ``KADSHARE_SIM_MPI_WAIT`` sets it; both give the same results.
    wait: str = field(default_factory=lambda: os.environ.get(WAIT_ENV, "poll"))

    @classmethod
    def from_mpi(cls) -> Shard:
        """COMM_WORLD when mpi4py is installed, else a single shard."""
        try:
            from mpi4py import MPI
        except ImportError:
            launched = launched_ranks()
            if launched > 1:     # N copies would each run the whole simulation
                raise RuntimeError(f"started as one of {launched} MPI ranks but mpi4py is "
                                   "not installed: pip install -e '.[mpi]'") from None
            return cls()
        comm = MPI.COMM_WORLD
        return cls(comm.Get_rank(), comm.Get_size(), comm if comm.Get_size() > 1 else None)

    def owner(self, idx: int) -> int:
        return idx % self.size

    def exchange(self, outboxes: list[list[Parcel]], next_t: float,
                 done: bool = False) -> tuple[list[Parcel], float, bool]:
        """Send each rank its parcels, this rank's ``next_t`` and whether it is ``done``;
        return everything sent to this one, the minimum ``next_t`` of all ranks and
        whether all are done (one collective a window: each one is a point where a
        rank the OS has descheduled holds up the others)."""
        if self.comm is None:
            return outboxes[0], next_t, done
        msgs = [(box, next_t, done) for box in outboxes]
        inboxes = self._polled_alltoall(msgs) if self.wait == "poll" else \
            self.comm.alltoall(msgs)
        return ([p for box, _, _ in inboxes for p in box], min(t for _, t, _ in inboxes),
                all(d for _, _, d in inboxes))

    def _polled_alltoall(self, msgs: list[Any]) -> list[Any]:
        """``alltoall`` from isend and probe-then-recv, sleeping between probes; raises
        RuntimeError if another rank stays silent for ``WINDOW_WAIT_MAX`` seconds."""
        comm, me = self.comm, self.rank
        sends = [comm.isend(msgs[r], dest=r, tag=_WINDOW_TAG)
                 for r in range(self.size) if r != me]
        got: list[Any] = [None] * self.size
        got[me] = msgs[me]
        pending = [r for r in range(self.size) if r != me]
        deadline = time.monotonic() + WINDOW_WAIT_MAX
        while pending:
            for r in list(pending):
                if comm.iprobe(source=r, tag=_WINDOW_TAG):
                    got[r] = comm.recv(source=r, tag=_WINDOW_TAG)
                    pending.remove(r)
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ranks {pending} sent nothing for {WINDOW_WAIT_MAX:g} s "
                                       "at a window end (died or hung?)")
                time.sleep(_POLL_SLEEP)
        while not all(req.Test() for req in sends):
            if time.monotonic() > deadline:
                raise RuntimeError(f"window sends not taken for {WINDOW_WAIT_MAX:g} s")
            time.sleep(_POLL_SLEEP)
        return got

    def gather(self, obj: Any) -> list[Any] | None:
        if self.comm is None:
            return [obj]
        return self.comm.gather(obj, root=0)


def _unit(*parts: Any) -> float:
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class ShardedNetwork(VirtualNetwork):
    """A VirtualNetwork for this rank's nodes that posts other ranks' datagrams."""

    def __init__(self, loop: VirtualTimeLoop, model: NetModel, shard: Shard,
                 owner_of_host: dict[str, int], **kwargs: Any) -> None:
        super().__init__(loop, model, **kwargs)
        self.shard = shard
        self.owner_of_host = owner_of_host
        self.node_context: dict[str, contextvars.Context] = {}
        self.outboxes: list[list[Parcel]] = [[] for _ in range(shard.size)]
        self._seq: dict[tuple[str, int], int] = {}

    def send(self, src: VirtualDatagramTransport, data: bytes, dst: tuple[str, int]) -> None:
        model, now = self.model, self.loop.time()
        model.traffic.count(traffic_tag.get(), len(data), now)
        seq = self._seq.get(src.addr, 0)
        self._seq[src.addr] = seq + 1
        if model.loss > 0 and _unit(model.seed, src.name, seq) < model.loss:
            model.traffic.dropped += 1
            return
        arrive = self.arrival_time(src, len(data), dst, now)
        owner = self.owner_of_host.get(dst[0], self.shard.rank)
        if owner != self.shard.rank:
            self.outboxes[owner].append((arrive, src.addr, seq, dst, data))
            return
        self._post(arrive, src.addr, dst, data)

    def context_for(self, dst: tuple[str, int]) -> contextvars.Context:
        return self.node_context.get(dst[0], self.context)

    def _post(self, arrive: float, src: tuple[str, int], dst: tuple[str, int],
              data: bytes) -> None:
        self.loop.call_at(arrive, self._arrive, data, src, dst, context=self.context_for(dst))

    def boundary(self, next_local: float, done: bool = False) -> tuple[float, bool]:
        """Window end: hand parcels over, schedule the ones that came in in a canonical
        order (time, sender, sender's sequence), and return the earliest time anything
        happens on any rank (``next_local``: this rank's next timer) and whether every
        rank said ``done``."""
        out, self.outboxes = self.outboxes, [[] for _ in range(self.shard.size)]
        in_flight = min((p[0] for box in out for p in box), default=next_local)
        incoming, earliest, all_done = self.shard.exchange(out, min(next_local, in_flight),
                                                           done)
        now = self.loop.time()
        for arrive, src, _seq, dst, data in sorted(incoming, key=lambda p: p[:3]):
            if arrive < now:
                raise RuntimeError(f"causality: datagram for t={arrive} reached a shard "
                                   f"at t={now}; the window exceeds the minimum latency")
            self._post(arrive, src, dst, data)
        return earliest, all_done


async def _node_life(idx: int, nodes: int, seed: int, files: list[FileSpec],
                     out: dict[int, dict]) -> None:
    """Join at a fixed virtual time, announce, look a file up at a fixed time."""
    from simulations.impls.kadshare import KadshareSimNode

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    rec: dict[str, Any] = {"node": idx}
    out[idx] = rec
    await asyncio.sleep(idx * 0.05)
    node = KadshareSimNode(idx, host_for(idx), {
        "secret": _secret(seed, idx, "ed25519").hex(), "intervals": "production"})
    boot = [] if idx == 0 else [(host_for(0), 4000)]
    try:
        await asyncio.wait_for(node.start(boot), 30)
        rec["joined"] = round(loop.time() - t0, 9)
        await asyncio.wait_for(node.announce(files[idx % len(files)]), 30)
        rec["announced"] = round(loop.time() - t0, 9)
    except Exception as exc:
        rec["error"] = type(exc).__name__
    await asyncio.sleep(max(0.0, t0 + nodes * 0.05 + 20 + idx * 0.01 - loop.time()))
    f = files[(idx * 7 + 3) % len(files)]
    start = loop.time()
    try:
        keys = await asyncio.wait_for(node.lookup(f), 10)
        rec["found"] = len(set(keys))
        rec["lookup_s"] = round(loop.time() - start, 9)
    except Exception as exc:
        rec["lookup_error"] = type(exc).__name__
    await asyncio.sleep(max(0.0, t0 + nodes * 0.05 + 40 - loop.time()))
    node.crash()


def _next_timer(loop: VirtualTimeLoop, default: float) -> float:
    """When this rank's loop has something to do next (now if callbacks are ready).

    Called at every window end, so it must not scan the heap (10,000 nodes keep tens of
    thousands of timers: a scan per 20 ms window would cost more than the simulation).
    Cancelled timers at the head are dropped as asyncio's own ``_run_once`` drops them;
    then the head is the earliest live timer."""
    if loop._ready:  # type: ignore[attr-defined]  # asyncio's ready queue
        return loop.time()
    scheduled = loop._scheduled  # type: ignore[attr-defined]  # asyncio's timer heap
    while scheduled and scheduled[0].cancelled():
        handle = heapq.heappop(scheduled)
        handle._scheduled = False
        loop._timer_cancelled_count -= 1  # type: ignore[attr-defined]  # asyncio internals
    return scheduled[0].when() if scheduled else default


def run_workload(shard: Shard, *, nodes: int, seed: int,
                 latency: tuple[float, float] = (0.02, 0.1), loss: float = 0.0,
                 proc_delay: float = 0.0002, uplink: float = 10e6) -> dict[str, Any] | None:
    """Run this rank's share; rank 0 returns the merged results (others None)."""
    if latency[0] <= 0:
        raise ValueError("sharding needs a positive minimum latency (the window length)")
    from dht import clock

    files = [FileSpec(i, hashlib.sha256(f"mpi/{seed}/{i}".encode()).hexdigest(), f"f{i}", 1000)
             for i in range(max(1, nodes // 4))]
    loop = VirtualTimeLoop()
    asyncio.set_event_loop(loop)
    model = NetModel(seed=seed, latency=latency, loss=loss)
    owners = {host_for(i): shard.owner(i) for i in range(nodes)}
    net = ShardedNetwork(loop, model, shard, owners, proc_delay=proc_delay, uplink_bps=uplink)
    loop.set_network(net)
    out: dict[int, dict] = {}
    tasks = []
    for idx in range(nodes):
        if shard.owner(idx) != shard.rank:
            continue
        ctx = contextvars.copy_context()
        net.node_context[host_for(idx)] = ctx
        ctx.run(clock.set_rng, random.Random(f"kadshare-sim/mpi/{seed}/{idx}"))
        tasks.append(ctx.run(loop.create_task, _node_life(idx, nodes, seed, files, out)))
    window = latency[0]
    end = loop.time() + nodes * 0.05 + 45
    wall0 = time.perf_counter()
    windows = 0
    try:
        start = loop.time()
        while start < end:
            windows += 1
            loop.advance_to(start)
            w_end = min(start + window, end)
            loop.call_at(w_end, loop.stop)
            loop.run_forever()
            loop.advance_to(w_end)
            # Skip idle stretches: nothing happens on any rank before the earliest
            # pending event of all, so the next window starts there.
            start = max(w_end, min(end, net.boundary(_next_timer(loop, end))[0]))
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        clock.reset_rng(clock.set_rng(None))
        asyncio.set_event_loop(None)
        loop.close()
    part = {"nodes": out, "delivered": net.delivered, "msgs": sum(model.traffic.msgs.values()),
            "wall_s": time.perf_counter() - wall0, "windows": windows}
    parts = shard.gather(part)
    if parts is None:
        return None
    merged = {i: r for p in parts for i, r in p["nodes"].items()}
    records = [merged[i] for i in sorted(merged)]
    canon = {"seed": seed, "nodes": nodes, "latency": list(latency), "loss": loss,
             "records": records, "delivered": sum(p["delivered"] for p in parts),
             "msgs": sum(p["msgs"] for p in parts)}
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
    found = sum(1 for r in records if r.get("found"))
    return {"digest": hashlib.sha256(blob).hexdigest(), "ranks": shard.size,
            "nodes": nodes, "lookups_found": found, "delivered": canon["delivered"],
            "windows": parts[0]["windows"],
            "wall_s": round(max(p["wall_s"] for p in parts), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulations.mpi",
                                 description="sharded virtual-time DHT workload")
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--latency", default="0.02:0.1", help="min:max one-way seconds")
    args = ap.parse_args(argv)
    lo, _, hi = args.latency.partition(":")
    try:
        latency = (float(lo), float(hi or lo))
        if args.nodes < 1 or not 0 <= args.loss < 1 or latency[0] <= 0 or latency[1] < latency[0]:
            raise ValueError
    except ValueError:
        print("error: need --nodes >= 1, 0 <= --loss < 1, 0 < min <= max latency",
              file=sys.stderr)
        return 2
    try:
        shard = Shard.from_mpi()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = run_workload(shard, nodes=args.nodes, seed=args.seed,
                       latency=latency, loss=args.loss)
    if res is not None:
        print(json.dumps(res, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
