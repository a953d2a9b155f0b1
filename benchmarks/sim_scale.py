"""How the inproc runner's cost grows with N: kadshare DHT nodes in one process and loop.

For N = 100, 300, 1000 (each in a fresh child process so memory is its own) it measures:
  join time      wall seconds to start and bootstrap all N nodes (16 joins in flight,
                 each through up to 3 random nodes already up), and per node;
  memory/node    resident-set growth during the joins divided by N;
  CPU/node/s     process CPU seconds over an idle window (no lookups: only the DHT's own
                 maintenance: refresh, republish, expiry) divided by N and the window;
  lookups        success of 50 find_providers of 10 announced files at the end
                 (shows the network still works at that size).
Usage: python benchmarks/sim_scale.py [N ...] [--idle SECONDS]
Prints one table and the growth ratios between consecutive sizes.

With ``--runner virtual`` (default sizes 1000 3000 10000) each N instead plays one
simulated hour of Weibull churn (shape 0.5, median session 30 min, production
``DhtConfig()`` intervals, 1 lookup/s, 100 files x 3 providers) on the virtual runner
(``kadshare-sim run churn --runner virtual``), in a fresh process, and prints:
  join_sim_s / join_wall_s   warm-up (all N joins, then every initial announce) in
                             simulated and in wall seconds;
  sim_per_wall               simulated seconds per wall second during the hour;
  cpu_s_per_sim_h            process CPU seconds per simulated hour;
  kib_per_node               peak resident-set growth over the run divided by N;
  success, p50_ms, p99_ms    lookups over the hour (simulated latencies);
  digest                     results digest (same N and seed, same digest).
Options: --hours H (default 1), --seed S, --warmup join|direct (default join: the N
initial nodes join for real; direct: converged routing tables, see
simulations/warmup.py), --profile FILE (cProfile of the run, for ``python -m pstats``;
sharded: one file per rank, FILE.N.rR), --latency SPEC (one-way delay per node pair,
default 0ms as in the earlier rows; every row says the latency it used),
--ranks K (default 0: the one-process engine; K >= 1: the sharded engine,
simulations/sharded.py, in one process for K = 1 and under ``mpirun -n K`` for K > 1;
needs a positive minimum --latency, the window length). Sharded rows also give
``windows`` (how many the run took) and ``sync_s`` (rank 0's wall seconds handing
datagrams over at window ends, waiting for the other ranks included);
cpu_s_per_sim_h is then the sum over ranks and kib_per_node the ranks' peak growth
summed. ``cmd_wall_s`` is the child command's wall time seen from outside (interpreter
and MPI start-up included). --slices SECONDS (one process only) adds a table per N:
for every SECONDS of simulated time, the nodes up, CPU and wall seconds, requests sent,
timeouts and their share, and lookups by cause (find, publish, refresh, bootstrap), to
see where an hour's work goes and how it changes as routing tables age.

    nice -n 10 .venv/bin/python benchmarks/sim_scale.py \
        --runner virtual 1000 --hours 0.25 --warmup direct --latency 20-80ms --ranks 2
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import subprocess
import sys
import time
from typing import Any

JOIN_CONCURRENCY = 16
JOIN_TIMEOUT = 30.0
LOOKUP_TIMEOUT = 10.0


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _one(n: int, idle: float) -> dict:
    from dht import DhtConfig, DhtNode

    rng = random.Random(n)
    rss0 = _rss_kib()
    nodes: list[DhtNode] = []
    up: list[DhtNode] = []
    failures = 0
    sem = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def join(i: int) -> None:
        nonlocal failures
        async with sem:
            node = DhtNode(identity=None, config=DhtConfig.for_tests())
            nodes.append(node)
            try:
                await node.listen(port=0, interface="127.0.0.1")
                boot = [("127.0.0.1", x.port) for x in rng.sample(up, min(3, len(up)))]
                if boot:
                    await asyncio.wait_for(node.bootstrap(boot), JOIN_TIMEOUT)
                up.append(node)
            except Exception:
                failures += 1

    t0 = time.monotonic()
    await join(0)
    await asyncio.gather(*(join(i) for i in range(1, n)))
    join_s = time.monotonic() - t0
    rss1 = _rss_kib()
    files = [hashlib.sha256(f"scale-{i}".encode()).hexdigest() for i in range(10)]
    for i, fid in enumerate(files):
        await up[i * 7 % len(up)].announce(fid, f"scale file {i}.bin", 1000 + i,
                                           grpc=f"127.0.0.1:{20000 + i}")
    await asyncio.sleep(1.0)
    cpu0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(idle)
    cpu_s, wall = time.process_time() - cpu0, time.monotonic() - w0
    ok = 0
    lat = []
    for _ in range(50):
        fid = rng.choice(files)
        s = time.monotonic()
        try:
            recs = await asyncio.wait_for(rng.choice(up).find_providers(fid), LOOKUP_TIMEOUT)
            ok += bool(recs)
        except Exception:
            pass
        lat.append(time.monotonic() - s)
    lat.sort()
    for node in nodes:
        node.stop()
    return {
        "n": n, "join_s": round(join_s, 1), "join_ms_per_node": round(1000 * join_s / n, 1),
        "join_failures": failures, "rss_mib": round(rss1 / 1024, 1),
        "kib_per_node": round((rss1 - rss0) / n, 1),
        "cpu_ms_per_node_s": round(1000 * cpu_s / (n * wall), 3),
        "cpu_fraction": round(cpu_s / wall, 2),
        "lookup_success": ok / 50, "lookup_p50_ms": round(1000 * lat[len(lat) // 2], 1),
    }


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


SLICE_KEYS = ("requests_out", "timeouts", "lookups_find", "lookups_publish",
              "lookups_refresh", "refresh_probes", "lookups_bootstrap")


def _slicer(every: int) -> tuple[Any, list[dict]]:
    """An engine observer that sums the nodes' counters every ``every`` simulated seconds.

    Counted over the nodes up at a slice's end (a node that left during the slice takes
    its last counts with it); CPU and wall seconds are this process's, for the slice."""
    rows: list[dict] = []
    last: dict[Any, dict[str, int]] = {}
    clock = [time.process_time(), time.monotonic()]

    def observe(sec: int, up: list[Any]) -> None:
        if sec % every:
            return
        seen = {}
        total = dict.fromkeys(SLICE_KEYS, 0)
        for handle in up:
            counts = handle.counters()
            now = {k: int(counts.get(k, 0)) for k in SLICE_KEYS}
            before = last.get(handle, {})
            for k in SLICE_KEYS:
                total[k] += now[k] - before.get(k, 0)
            seen[handle] = now
        last.clear()
        last.update(seen)
        cpu, wall = time.process_time(), time.monotonic()
        if sec:
            rows.append({"t_s": sec, "up": len(up), "cpu_s": round(cpu - clock[0], 1),
                         "wall_s": round(wall - clock[1], 1), **total,
                         "timeout_share": round(total["timeouts"]
                                                / max(1, total["requests_out"]), 3)})
        clock[:] = [cpu, wall]

    return observe, rows


def _one_virtual(n: int, hours: float, seed: int, profile: str | None,
                 warmup: str = "join", latency: str = "0ms", ranks: int = 0,
                 slices: int = 0) -> dict | None:
    """One N in this process (or, sharded, this rank's share); None on ranks > 0."""
    from simulations.churn import parse_session
    from simulations.config import SimConfig, parse_latency
    from simulations.engine import run_trace
    from simulations.scenarios import build_trace
    from simulations.vloop import run_virtual

    # Weibull(k=0.5): median = scale * ln(2)^2, so scale = 1800 / ln(2)^2 for 30 min.
    scale = 1800.0 / math.log(2) ** 2
    cfg = SimConfig(scenario="churn", nodes=n, duration=3600.0 * hours, seed=seed,
                    runner="virtual", session=parse_session(f"weibull:0.5,{scale:.1f}"),
                    lookup_rate=1.0, files=100, providers=3, intervals="production",
                    warmup=warmup, progress=False, latency=parse_latency(latency))
    trace = build_trace(cfg)
    rss0 = _vm_kib("VmRSS")
    w0, c0 = time.monotonic(), time.process_time()
    shard = None
    slice_rows: list[dict] = []
    if ranks >= 1:
        from simulations.mpi import Shard
        from simulations.sharded import run_sharded

        shard = Shard.from_mpi()
        if shard.size != ranks:
            raise SystemExit(f"--ranks {ranks} but {shard.size} MPI ranks started")

        def call() -> Any:
            return run_sharded(trace, "kadshare", shard)
    else:
        observe = None
        if slices:
            observe, slice_rows = _slicer(slices)

        def call() -> Any:
            return run_virtual(run_trace(trace, "kadshare", observe=observe))
    if profile:
        import cProfile

        prof = cProfile.Profile()
        out = prof.runcall(call)
        prof.dump_stats(f"{profile}.r{shard.rank}" if shard is not None else profile)
    else:
        out = call()
    if out is None:          # a rank other than 0: rank 0 reports
        return None
    wall, cpu = time.monotonic() - w0, time.process_time() - c0
    m = out.summary
    from simulations.digest import metrics_digest

    hour_wall = max(1e-9, wall - m["warmup_s"])
    hosts = out.shards or []
    growth = (sum(h["hwm_kib"] for h in hosts) - len(hosts) * rss0 if hosts
              else _vm_kib("VmHWM") - rss0)
    return {
        "n": n, "ranks": ranks, "latency": latency,
        "join_sim_s": m.get("warmup_sim_s"), "join_wall_s": m["warmup_s"],
        "sim_per_wall": round(cfg.duration / hour_wall, 2),
        "cpu_s_per_sim_h": round(m["harness_cpu_fraction"] * 3600, 1),
        "total_wall_s": round(wall, 1), "total_cpu_s": round(cpu, 1),
        "windows": hosts[0]["windows"] if hosts else "-",
        "sync_s": hosts[0]["sync_s"] if hosts else "-",
        "rank_cpu_s": [h["cpu_s"] for h in hosts] if hosts else "-",
        "kib_per_node": round(growth / n, 1),
        "alive_end": m["alive_end"], "join_failures": m["join_failures"],
        "lookups": m["lookups_eligible"], "success": m["success"],
        "p50_ms": m["latency_p50_ms"], "p99_ms": m["latency_p99_ms"],
        "msgs_per_lookup": round(m["msgs_per_lookup"] or 0, 1),
        "digest": metrics_digest({"seed": seed, "scenario": "churn",
                                  "config": cfg.to_json(), "trace_digest": trace.digest(),
                                  "runs": [{"impl": out.impl, "runner": out.runner,
                                            "metrics": m, "infra": out.infra,
                                            "marks": out.marks,
                                            "traffic": out.traffic}]})[:16],
        "slices": slice_rows,
    }


def _main_virtual(sizes: list[int], hours: float, seed: int, profile: str,
                  warmup: str, latency: str = "0ms", ranks: int = 0, slices: int = 0) -> int:
    sizes = sizes or [1000, 3000, 10000]
    cols = ["n", "ranks", "latency", "join_sim_s", "join_wall_s", "sim_per_wall",
            "cpu_s_per_sim_h", "kib_per_node", "alive_end", "join_failures", "lookups",
            "success", "p50_ms", "p99_ms", "msgs_per_lookup", "windows", "sync_s",
            "total_wall_s", "cmd_wall_s", "digest"]
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|", flush=True)
    if ranks > 1:
        from simulations.mpi import mpirun_command

        prefix = mpirun_command(ranks)
    else:
        prefix = []
    status = 0
    for n in sizes:
        argv = [*prefix, sys.executable, __file__, "--runner", "virtual", "--one", str(n),
                "--hours", str(hours), "--seed", str(seed), "--warmup", warmup,
                "--latency", latency, "--ranks", str(ranks), "--slices", str(slices)]
        if profile:
            argv += ["--profile", f"{profile}.{n}"]
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=4 * 3600)
        cmd_wall = time.monotonic() - t0
        if proc.returncode != 0:
            # Keep everything: thousands of nodes' warnings can bury the cause (a 10,000
            # node sharded run once failed with only warnings in the last 2,000 chars).
            import tempfile

            with tempfile.NamedTemporaryFile("w", prefix=f"sim_scale-{n}-", suffix=".log",
                                             delete=False) as fh:
                fh.write(f"argv: {argv}\nexit: {proc.returncode}\n--- stdout\n"
                         f"{proc.stdout}\n--- stderr\n{proc.stderr}")
            lines = (proc.stdout + proc.stderr).splitlines()
            keep = [ln for ln in lines if any(w in ln for w in (
                "Error", "Traceback", "error", "exit", "signal", "Killed", "abort"))]
            print(f"N={n} failed (exit {proc.returncode}; full output in {fh.name}):\n"
                  + "\n".join(keep[-40:]) + "\n" + proc.stderr[-1000:], file=sys.stderr)
            rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if not rows:
                return 1
            print(f"<!-- N={n}: exit {proc.returncode} after the row below was printed -->")
            status = 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["cmd_wall_s"] = round(cmd_wall, 1)
        print("| " + " | ".join(str(r[c]) for c in cols) + " |", flush=True)
        if r.get("rank_cpu_s") != "-":
            print(f"<!-- N={n}: measured-phase CPU s per rank {r['rank_cpu_s']} -->",
                  flush=True)
        if r.get("slices"):
            _print_slices(n, r["slices"])
    return status


def _print_slices(n: int, rows: list[dict]) -> None:
    cols = list(rows[0])
    print(f"\nN={n}, per slice of the measured run (counts summed over the nodes up at "
          "the slice's end):")
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    print(flush=True)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="How the cost of kadshare DHT nodes grows with N (see the module docstring).")
    parser.add_argument("sizes", nargs="*", type=int, metavar="N",
                        help="node counts (inproc: 100 300 1000; virtual: 1000 3000 10000)")
    parser.add_argument("--runner", choices=["inproc", "virtual"], default="inproc")
    parser.add_argument("--idle", type=float, default=20.0,
                        help="inproc: seconds of idle maintenance measured")
    parser.add_argument("--hours", type=float, default=1.0,
                        help="virtual: simulated hours of churn")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", choices=["join", "direct"], default="join",
                        help="virtual: real joins, or converged routing tables")
    parser.add_argument("--profile", default="", help="virtual: cProfile file prefix")
    parser.add_argument("--latency", default="0ms",
                        help="virtual: one-way delay per node pair, e.g. 20-80ms")
    parser.add_argument("--ranks", type=int, default=0,
                        help="virtual: 0 = one-process engine; K >= 1 = sharded engine "
                             "on K MPI ranks (mpirun -n K when K > 1)")
    parser.add_argument("--slices", type=int, default=0, metavar="SECONDS",
                        help="virtual, one process: print requests, timeouts, lookups by "
                             "cause and CPU per SECONDS of simulated time")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one N
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.sizes) or (args.one is not None and args.one < 2):
        parser.error("N must be at least 2")
    if args.hours <= 0 or args.idle <= 0:
        parser.error("--hours and --idle must be positive")
    from simulations.config import SpecError, parse_latency

    try:
        low = parse_latency(args.latency)[0]
    except SpecError as exc:
        parser.error(str(exc))
    if args.ranks < 0 or (args.ranks and args.runner != "virtual"):
        parser.error("--ranks needs --runner virtual and K >= 0")
    if args.slices < 0 or (args.slices and (args.runner != "virtual" or args.ranks)):
        parser.error("--slices needs --runner virtual without --ranks, and SECONDS >= 1")
    if args.ranks and low <= 0:
        parser.error("--ranks needs a positive minimum --latency (the window), e.g. 20-80ms")
    return args


def main() -> int:
    args = _parse(sys.argv[1:])
    if args.runner == "virtual":
        if args.one is not None:
            row = _one_virtual(args.one, args.hours, args.seed, args.profile or None,
                               args.warmup, args.latency, args.ranks, args.slices)
            if row is not None:
                print(json.dumps(row))
            return 0
        return _main_virtual(args.sizes, args.hours, args.seed, args.profile, args.warmup,
                             args.latency, args.ranks, args.slices)
    idle = args.idle
    if args.one is not None:
        print(json.dumps(asyncio.run(_one(args.one, idle))))
        return 0
    sizes = args.sizes or [100, 300, 1000]
    rows = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--idle", str(idle)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            print(f"N={n} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"done N={n}", file=sys.stderr)
    cols = ["n", "join_s", "join_ms_per_node", "join_failures", "rss_mib", "kib_per_node",
            "cpu_ms_per_node_s", "cpu_fraction", "lookup_success", "lookup_p50_ms"]
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print()
    for a, b in zip(rows, rows[1:], strict=False):
        f = b["n"] / a["n"]
        jt = b["join_s"] / max(a["join_s"], 1e-9)
        print(f"N x{f:.1f} ({a['n']}->{b['n']}): join time x{jt:.1f},"
              f" memory/node x{b['kib_per_node'] / max(a['kib_per_node'], 1e-9):.2f},"
              f" CPU/node/s x{b['cpu_ms_per_node_s'] / max(a['cpu_ms_per_node_s'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
