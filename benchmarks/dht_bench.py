#!/usr/bin/env python3
"""Benchmark kadshare's DhtNode against plain ``kademlia`` in one run (not a test).

N nodes of each implementation run in this process on loopback (real UDP), one
implementation after the other, with the same workload and seed:

* join: every node bootstraps from a random earlier node (time per join);
* puts: ``--keys`` keys from random nodes; a put that reports success but that a later
  get cannot find is "silently lost";
* completeness: 10 writers put one key, 5 readers get it (kadshare keeps every
  provider; plain kademlia keeps the last writer);
* lookups: ``--lookups`` sequential gets of random keys from random nodes
  (success, p50/p95/p99);
* churn: ``--churn-lookups`` gets ``--concurrency`` at a time before the kill (the
  baseline: with 20 lookups sharing one loop's CPU, latency includes queueing), then
  ``--kill`` of the nodes stop without leaving, and the same gets right away and again
  after ``--settle`` seconds.  ``--rate R`` runs these phases open loop instead: one get
  every 1/R s however many are in flight, so a lookup's latency is not its queueing
  behind the 19 others of a saturated loop (the closed loop runs the process's one core
  flat out: 300 gets in ~0.3 s, p50 ~20x a lone get's, and a 20 ms preemption by another
  process delays every lookup in flight at once);
* memory per node: growth of the resident set over node start and join (no records
  yet), divided by N, measured in a fresh interpreter per implementation
  (``--tracemalloc`` counts Python allocations instead; slower).
  ``--join-only --nodes 1000`` gives join time and memory at larger N.

``--hog`` runs every implementation a second time with a CPU-burning process (a busy loop
in another interpreter, at the benchmark's own priority) beside it, so the churn rows show
recovery on a loaded machine; the table then has four columns.  The "CPU wait" rows give
the share of each churn phase's wall time this process was runnable but waiting for a
CPU (``/proc/thread-self/schedstat``): the part of a figure that is other processes'
load, not the DHT (a ``nice -n 10`` run loses the cores to any un-niced work).

kadshare's get is ``find_providers(file_id, wanted=1)`` (stop at the first provider,
as plain kademlia's ``get`` stops at the first value); completeness uses full lookups.
Prints a table with kadshare/plain ratios and writes JSON (``--json``).

    .venv/bin/python benchmarks/dht_bench.py --nodes 256
    nice -n 10 .venv/bin/python benchmarks/dht_bench.py --nodes 256 --hog
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kademlia.network import Server  # noqa: E402

from dht import DhtConfig, DhtNode  # noqa: E402


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc), bytes."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class KadshareImpl:
    name = "kadshare"

    def __init__(self) -> None:
        self.config = DhtConfig()

    def make(self) -> DhtNode:
        return DhtNode(config=self.config)

    async def listen(self, node: DhtNode) -> int:
        await node.listen(0, "127.0.0.1")
        return node.port

    async def bootstrap(self, node: DhtNode, addr: tuple[str, int]) -> None:
        await node.bootstrap([addr])

    async def put(self, node: DhtNode, key: str, value: str) -> bool:
        fid = hashlib.sha256(key.encode()).hexdigest()
        remote = await node.announce(fid, f"{key} {value}.bin", 1, grpc="127.0.0.1:1")
        return remote > 0

    async def get(self, node: DhtNode, key: str) -> bool:
        fid = hashlib.sha256(key.encode()).hexdigest()
        return bool(await node.find_providers(fid, wanted=1))

    async def get_all(self, node: DhtNode, key: str) -> int:
        fid = hashlib.sha256(key.encode()).hexdigest()
        return len(await node.find_providers(fid))

    def stop(self, node: DhtNode) -> None:
        node.stop()

    COUNTERS = ("requests_out", "lookup_soft_timeouts", "lookup_hedges",
                "lookup_first_round_hedges")

    @classmethod
    def counters(cls, nodes: list[DhtNode]) -> dict[str, int]:
        """Requests the nodes have sent so far, and the calls their lookups stopped
        waiting for: at the soft timeout (a wait of >= 30 ms, usually a dead contact),
        hedged (slot freed earlier), hedged before the lookup's first answer."""
        out = dict.fromkeys(cls.COUNTERS, 0)
        for node in nodes:
            if node.protocol is not None:
                for name in cls.COUNTERS:
                    out[name] += node.protocol.stats[name]
        return out


class PlainImpl:
    name = "kademlia"

    def make(self) -> Server:
        return Server()

    async def listen(self, node: Server) -> int:
        await node.listen(0, "127.0.0.1")
        return node.transport.get_extra_info("sockname")[1]

    async def bootstrap(self, node: Server, addr: tuple[str, int]) -> None:
        await node.bootstrap([addr])

    async def put(self, node: Server, key: str, value: str) -> bool:
        return bool(await node.set(key, value))

    async def get(self, node: Server, key: str) -> bool:
        return (await node.get(key)) is not None

    async def get_all(self, node: Server, key: str) -> int:
        return 1 if (await node.get(key)) is not None else 0

    def stop(self, node: Server) -> None:
        node.stop()

    @staticmethod
    def counters(nodes: list[Server]) -> dict[str, int]:
        return {}


async def timed(coro: Any, budget: float) -> tuple[bool, float]:
    start = time.perf_counter()
    try:
        ok = await asyncio.wait_for(coro, budget)
    except Exception:  # a timeout or an error both count as a failed lookup
        ok = False
    return bool(ok), time.perf_counter() - start


async def lookups(impl: Any, nodes: list, keys: list[str], count: int, rng: random.Random,
                  concurrency: int, budget: float, phase_budget: float,
                  rate: float = 0.0) -> dict:
    """``count`` gets, ``concurrency`` at a time (closed loop: the next starts when one
    ends), or with ``rate`` > 0 one every 1/``rate`` s however many are in flight (open
    loop); none starts after ``phase_budget`` s.

    Lookups that never started are reported as ``skipped`` (not as failures), so a slow
    implementation cannot make the benchmark run for ever.
    """
    gate = asyncio.Semaphore(concurrency)
    start = time.perf_counter()
    plan = [(rng.choice(nodes), rng.choice(keys)) for _ in range(count)]

    async def one(node: Any, key: str) -> tuple[bool, float] | None:
        async with gate:
            if time.perf_counter() - start > phase_budget:
                return None
            return await timed(impl.get(node, key), budget)

    async def paced(index: int, node: Any, key: str) -> tuple[bool, float] | None:
        at = index / rate
        if at > phase_budget:
            return None
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        return await timed(impl.get(node, key), budget)

    if rate > 0:
        outcomes = await asyncio.gather(*(paced(i, n, k) for i, (n, k) in enumerate(plan)))
    else:
        outcomes = await asyncio.gather(*(one(n, k) for n, k in plan))
    results = [r for r in outcomes if r is not None]
    lat = [dt for _, dt in results]
    done = max(1, len(results))
    return {
        "count": len(results),
        "skipped": count - len(results),
        "success": sum(ok for ok, _ in results) / done,
        "p50_ms": pct(lat, 50) * 1000,
        "p95_ms": pct(lat, 95) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
    }


def cpu_wait_s() -> float | None:
    """Seconds this thread has spent runnable but not on a CPU (Linux schedstat), or
    None where that is not available."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


async def measured(coro: Any, impl: Any = None, nodes: list | None = None
                   ) -> tuple[dict, float | None]:
    """Run a ``lookups`` phase; also return the share of its wall time this process
    waited for a CPU (other processes had the cores), in %; with ``impl`` and ``nodes``
    the phase's result gains, per get, the implementation's counters (kadshare:
    ``requests_out_per_lookup``, ``lookup_soft_timeouts_per_lookup``, ...)."""
    before = impl.counters(nodes) if impl is not None and nodes is not None else {}
    wait0, start = cpu_wait_s(), time.perf_counter()
    out = await coro
    wait1, wall = cpu_wait_s(), time.perf_counter() - start
    if before:
        after = impl.counters(nodes)
        for name, value in before.items():
            out[f"{name}_per_lookup"] = (after[name] - value) / max(1, out["count"])
    if wait0 is None or wait1 is None or wall <= 0:
        return out, None
    return out, (wait1 - wait0) / wall * 100


class GcPauses:
    """The longest garbage-collection pause from now until ``stop()``, in ms."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._start = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.longest = max(self.longest, (time.perf_counter() - self._start) * 1000)

    def stop(self) -> float:
        gc.callbacks.remove(self._note)
        return self.longest


async def run_impl(impl: Any, args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    out: dict[str, Any] = {"impl": impl.name, "nodes": args.nodes}
    phases: dict[str, float] = {}
    out["phase_seconds"] = phases
    t0 = time.perf_counter()
    gc.collect()
    if args.tracemalloc:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    else:
        base = rss_bytes()
    nodes = [impl.make() for _ in range(args.nodes)]
    ports = [await impl.listen(n) for n in nodes]
    joins = []
    for i, node in enumerate(nodes[1:], start=1):
        start = time.perf_counter()
        await impl.bootstrap(node, ("127.0.0.1", ports[rng.randrange(i)]))
        joins.append(time.perf_counter() - start)
    out["join_p50_ms"] = pct(joins, 50) * 1000
    out["join_p99_ms"] = pct(joins, 99) * 1000
    gc.collect()
    if args.tracemalloc:
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    else:
        used = rss_bytes() - base
    out["memory_per_node_kb"] = used / args.nodes / 1024
    phases["join"] = time.perf_counter() - t0
    if args.join_only:
        for node in nodes:
            impl.stop(node)
        await asyncio.sleep(0.2)
        return out

    keys = [f"key{i:04d}" for i in range(args.keys)]
    put_ok = []
    for key in keys:
        put_ok.append(await impl.put(rng.choice(nodes), key, "v"))
    phases["puts"] = time.perf_counter() - t0 - phases["join"]
    out["puts_reported_ok"] = sum(put_ok) / len(keys)
    lost = 0
    for key, ok in zip(keys, put_ok, strict=False):
        if ok and not (await timed(impl.get(rng.choice(nodes), key), args.budget))[0]:
            lost += 1
    out["puts_silently_lost"] = lost

    shared = "shared-key"
    writers = rng.sample(nodes, 10)
    for i, node in enumerate(writers):
        await impl.put(node, shared, f"writer{i}")
    readers = rng.sample([n for n in nodes if n not in writers], 5)
    found = [await impl.get_all(r, shared) for r in readers]
    out["completeness"] = statistics.mean(f / 10 for f in found)

    phases["check_and_completeness"] = time.perf_counter() - t0 - sum(phases.values())
    out["lookups"] = await lookups(
        impl, nodes, keys, args.lookups, rng, 1, args.budget, args.phase_budget
    )
    phases["lookups"] = time.perf_counter() - t0 - sum(phases.values())
    # The churn phases run --concurrency lookups at once in this one loop, so part of their
    # latency is waiting for the others' CPU: the same load before the kill is the baseline
    # that recovery is measured against.
    # One process holds all N nodes, so a full (generation 2) garbage collection walks the
    # objects of N nodes: ~96 ms at N=256 (measured with gc.callbacks), which stalled every
    # lookup in flight and was most of the "10 s later" p99 (a peer process holds one
    # node). The heap built so far is frozen (gc.freeze, as long-lived servers do) unless
    # --no-gc-freeze; the longest pause of the churn phases is reported either way.
    if not args.no_gc_freeze:
        gc.collect()
        gc.freeze()
    pauses = GcPauses()
    out["before_kill"], out["before_kill_cpu_wait_pct"] = await measured(lookups(
        impl, nodes, keys, args.churn_lookups, rng, args.concurrency, args.budget,
        args.phase_budget, args.rate,
    ), impl, nodes)
    phases["before_kill"] = time.perf_counter() - t0 - sum(phases.values())

    victims = set(rng.sample(range(len(nodes)), int(len(nodes) * args.kill)))
    for i in victims:
        impl.stop(nodes[i])
    alive = [n for i, n in enumerate(nodes) if i not in victims]
    out["after_kill"], out["after_kill_cpu_wait_pct"] = await measured(lookups(
        impl, alive, keys, args.churn_lookups, rng, args.concurrency, args.budget,
        args.phase_budget, args.rate,
    ), impl, alive)
    phases["after_kill"] = time.perf_counter() - t0 - sum(phases.values())
    await asyncio.sleep(args.settle)
    out["after_settle"], out["after_settle_cpu_wait_pct"] = await measured(lookups(
        impl, alive, keys, args.churn_lookups, rng, args.concurrency, args.budget,
        args.phase_budget, args.rate,
    ), impl, alive)
    phases["settle_and_after"] = time.perf_counter() - t0 - sum(phases.values())
    base = out["before_kill"]["p99_ms"]
    for phase in ("after_kill", "after_settle"):
        # recovery against the same run's no-failure baseline: the ratio survives the
        # machine's load, which scales both phases
        out[f"{phase}_p99_vs_before"] = out[phase]["p99_ms"] / base if base > 0 else None
    out["gc_pause_max_ms"] = pauses.stop()
    out["gc_frozen"] = not args.no_gc_freeze
    gc.unfreeze()
    for node in alive:
        impl.stop(node)
    await asyncio.sleep(0.2)
    return out


ROWS = [
    ("join p50 (ms)", ("join_p50_ms",), "lower"),
    ("join p99 (ms)", ("join_p99_ms",), "lower"),
    ("memory per node (KB)", ("memory_per_node_kb",), "lower"),
    ("puts reported ok", ("puts_reported_ok",), "higher"),
    ("puts silently lost", ("puts_silently_lost",), "lower"),
    ("completeness (10 writers)", ("completeness",), "higher"),
    ("lookup success", ("lookups", "success"), "higher"),
    ("lookup p50 (ms)", ("lookups", "p50_ms"), "lower"),
    ("lookup p95 (ms)", ("lookups", "p95_ms"), "lower"),
    ("lookup p99 (ms)", ("lookups", "p99_ms"), "lower"),
    ("before kill, concurrent: p50 (ms)", ("before_kill", "p50_ms"), "lower"),
    ("before kill, concurrent: p99 (ms)", ("before_kill", "p99_ms"), "lower"),
    ("after kill: success", ("after_kill", "success"), "higher"),
    ("after kill: skipped", ("after_kill", "skipped"), "lower"),
    ("after kill: p50 (ms)", ("after_kill", "p50_ms"), "lower"),
    ("after kill: p95 (ms)", ("after_kill", "p95_ms"), "lower"),
    ("after kill: p99 (ms)", ("after_kill", "p99_ms"), "lower"),
    ("after settle: success", ("after_settle", "success"), "higher"),
    ("after settle: skipped", ("after_settle", "skipped"), "lower"),
    ("after settle: p50 (ms)", ("after_settle", "p50_ms"), "lower"),
    ("after settle: p99 (ms)", ("after_settle", "p99_ms"), "lower"),
    ("after kill: p99 / before-kill p99", ("after_kill_p99_vs_before",), "lower"),
    ("after settle: p99 / before-kill p99", ("after_settle_p99_vs_before",), "lower"),
    ("longest GC pause, churn (ms)", ("gc_pause_max_ms",), "lower"),
    ("before kill: CPU wait (% of wall)", ("before_kill_cpu_wait_pct",), "lower"),
    ("after kill: CPU wait (% of wall)", ("after_kill_cpu_wait_pct",), "lower"),
    ("after settle: CPU wait (% of wall)", ("after_settle_cpu_wait_pct",), "lower"),
]


# kadshare's lookup counters per get, each churn phase (see KadshareImpl.counters)
ROWS += [
    (f"{label}: {what} per get", (phase, f"{counter}_per_lookup"), "lower")
    for phase, label in (("before_kill", "before kill"), ("after_kill", "after kill"),
                         ("after_settle", "after settle"))
    for counter, what in (("requests_out", "requests"),
                          ("lookup_soft_timeouts", "soft timeouts"),
                          ("lookup_hedges", "hedges"),
                          ("lookup_first_round_hedges", "1st-round hedges"))
]


def dig(d: dict, path: tuple[str, ...]) -> float | None:
    for part in path:
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d  # type: ignore[return-value]


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(
        value if value is not None else "-")


def table(results: dict[str, dict]) -> str:
    """kadshare vs kademlia (and the same with the hog, if it ran), with ratios."""
    pairs = [("", "kadshare", "kademlia")]
    if "kadshare+hog" in results or "kademlia+hog" in results:
        pairs.append(("+hog", "kadshare+hog", "kademlia+hog"))
    head = f"{'metric':40}"
    for tag, _, _ in pairs:
        head += f" {'kadshare' + tag:>13} {'kademlia' + tag:>13} {'ratio' + tag:>9}"
    lines = [head, "-" * len(head)]
    for label, path, _ in ROWS:
        line = f"{label:40}"
        for _, ka, pa in pairs:
            a, b = dig(results.get(ka, {}), path), dig(results.get(pa, {}), path)
            ratio = f"{a / b:.3f}" if isinstance(a, (int, float)) \
                and isinstance(b, (int, float)) and b else "-"
            line += f" {_fmt(a):>13} {_fmt(b):>13} {ratio:>9}"
        lines.append(line)
    return "\n".join(lines)


HOG_CODE = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end:\n    pass\n"


def start_hog() -> subprocess.Popen:
    """A CPU-burning interpreter beside the run (ends by itself after an hour at most)."""
    return subprocess.Popen([sys.executable, "-c", HOG_CODE])


def stop_hog(hog: subprocess.Popen) -> None:
    hog.kill()
    hog.wait(timeout=10)


async def main_async(args: argparse.Namespace) -> dict:
    impls = {"kadshare": KadshareImpl, "kademlia": PlainImpl}
    chosen = ["kadshare", "kademlia"] if args.impl == "both" else [args.impl]
    results = {}
    for hogged in ([False, True] if args.hog else [False]):
        for name in chosen:
            label = name + ("+hog" if hogged else "")
            start = time.perf_counter()
            print(f"running {label} with {args.nodes} nodes ...", file=sys.stderr, flush=True)
            hog = start_hog() if hogged else None
            try:
                results[label] = await run_impl(impls[name](), args)
            finally:
                if hog is not None:
                    stop_hog(hog)
            results[label]["wall_s"] = time.perf_counter() - start
            print(f"  {label} done in {results[label]['wall_s']:.1f} s", file=sys.stderr,
                  flush=True)
    return results


def memory_in_fresh_process(name: str, args: argparse.Namespace) -> float | None:
    """Start and join N nodes of one implementation in a new interpreter; KB per node.

    Measuring both implementations in one process would let the second reuse memory the
    first freed, so the memory row comes from a fresh process per implementation.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mem.json"
        cmd = [sys.executable, __file__, "--join-only", "--impl", name,
               "--nodes", str(args.nodes), "--seed", str(args.seed), "--json", str(out)]
        if args.tracemalloc:
            cmd.append("--tracemalloc")
        try:
            subprocess.run(cmd, check=True, timeout=900, capture_output=True)
            return json.loads(out.read_text())[name]["memory_per_node_kb"]
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
            print(f"memory run for {name} failed: {exc}", file=sys.stderr)
            return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--churn-lookups", type=int, default=300)
    parser.add_argument("--kill", type=float, default=0.3)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=20,
                        help="lookups in flight during the churn phases")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="open loop: start one churn-phase lookup every 1/RATE s "
                             "however many are in flight (default 0: closed loop, "
                             "--concurrency at a time)")
    parser.add_argument("--join-only", action="store_true",
                        help="only start and join the nodes (join time and memory at large N)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="measure memory with tracemalloc (slow) instead of RSS")
    parser.add_argument("--budget", type=float, default=15.0, help="cap per lookup, seconds")
    parser.add_argument("--phase-budget", type=float, default=100.0,
                        help="no lookup of a phase starts after this many seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hog", action="store_true",
                        help="run each implementation again beside a CPU-burning process")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory runs in fresh processes")
    parser.add_argument("--impl", choices=["both", "kadshare", "kademlia"], default="both")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="do not freeze the heap built before the churn phases "
                             "(full collections then walk all N nodes' objects)")
    parser.add_argument("--json", default=None, help="write results here (default: stdout only)")
    args = parser.parse_args()
    if not 8 <= args.nodes <= 2000:
        parser.error("--nodes must be within 8..2000")
    logging.basicConfig(level=logging.ERROR)
    # asyncio: upstream rpcudp logs InvalidStateError tracebacks when a lookup is cut
    # off by --budget (its pending-table defect, see docs/PROTOCOL.md)
    for noisy in ("kademlia", "rpcudp", "dht", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    results = asyncio.run(main_async(args))
    if not args.join_only:
        for name, res in results.items():
            res["memory_per_node_kb_in_run"] = res["memory_per_node_kb"]
            fresh = None if args.no_memory or name.endswith("+hog") \
                else memory_in_fresh_process(name, args)
            res["memory_per_node_kb"] = fresh
    mode = f"open loop, {args.rate:g} lookups/s" if args.rate > 0 \
        else f"closed loop, {args.concurrency} in flight"
    for res in results.values():
        res["churn_mode"] = mode
    print(f"churn phases: {mode}")
    print(table(results))
    text = json.dumps(results, indent=2, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
        print(f"JSON written to {args.json}")
    else:
        print(text)


if __name__ == "__main__":
    main()
