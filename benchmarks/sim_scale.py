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
simulations/warmup.py), --profile FILE (cProfile of the run, for ``python -m pstats``).
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


def _one_virtual(n: int, hours: float, seed: int, profile: str | None,
                 warmup: str = "join") -> dict:
    from simulations.churn import parse_session
    from simulations.config import SimConfig
    from simulations.engine import run_trace
    from simulations.scenarios import build_trace
    from simulations.vloop import run_virtual

    # Weibull(k=0.5): median = scale * ln(2)^2, so scale = 1800 / ln(2)^2 for 30 min.
    scale = 1800.0 / math.log(2) ** 2
    cfg = SimConfig(scenario="churn", nodes=n, duration=3600.0 * hours, seed=seed,
                    runner="virtual", session=parse_session(f"weibull:0.5,{scale:.1f}"),
                    lookup_rate=1.0, files=100, providers=3, intervals="production",
                    warmup=warmup, progress=False)
    trace = build_trace(cfg)
    rss0 = _vm_kib("VmRSS")
    w0, c0 = time.monotonic(), time.process_time()
    if profile:
        import cProfile

        prof = cProfile.Profile()
        out = prof.runcall(run_virtual, run_trace(trace, "kadshare"))
        prof.dump_stats(profile)
    else:
        out = run_virtual(run_trace(trace, "kadshare"))
    wall, cpu = time.monotonic() - w0, time.process_time() - c0
    m = out.summary
    from simulations.digest import metrics_digest

    hour_wall = max(1e-9, wall - m["warmup_s"])
    return {
        "n": n, "join_sim_s": m.get("warmup_sim_s"), "join_wall_s": m["warmup_s"],
        "sim_per_wall": round(cfg.duration / hour_wall, 2),
        "cpu_s_per_sim_h": round(m["harness_cpu_fraction"] * 3600, 1),
        "total_wall_s": round(wall, 1), "total_cpu_s": round(cpu, 1),
        "kib_per_node": round((_vm_kib("VmHWM") - rss0) / n, 1),
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
    }


def _main_virtual(sizes: list[int], hours: float, seed: int, profile: str,
                  warmup: str) -> int:
    sizes = sizes or [1000, 3000, 10000]
    cols = ["n", "join_sim_s", "join_wall_s", "sim_per_wall", "cpu_s_per_sim_h",
            "kib_per_node", "alive_end", "join_failures", "lookups", "success", "p50_ms",
            "p99_ms", "msgs_per_lookup", "total_wall_s", "digest"]
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|", flush=True)
    for n in sizes:
        argv = [sys.executable, __file__, "--runner", "virtual", "--one", str(n),
                "--hours", str(hours), "--seed", str(seed), "--warmup", warmup]
        if profile:
            argv += ["--profile", f"{profile}.{n}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=4 * 3600)
        if proc.returncode != 0:
            print(f"N={n} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print("| " + " | ".join(str(r[c]) for c in cols) + " |", flush=True)
    return 0


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
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one N
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.sizes) or (args.one is not None and args.one < 2):
        parser.error("N must be at least 2")
    if args.hours <= 0 or args.idle <= 0:
        parser.error("--hours and --idle must be positive")
    return args


def main() -> int:
    args = _parse(sys.argv[1:])
    if args.runner == "virtual":
        if args.one is not None:
            print(json.dumps(_one_virtual(args.one, args.hours, args.seed,
                                          args.profile or None, args.warmup)))
            return 0
        return _main_virtual(args.sizes, args.hours, args.seed, args.profile, args.warmup)
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
