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
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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


def main() -> int:
    args = sys.argv[1:]
    idle = 20.0
    if "--idle" in args:
        i = args.index("--idle")
        idle = float(args[i + 1])
        del args[i:i + 2]
    if args and args[0] == "--one":
        res = asyncio.run(_one(int(args[1]), idle))
        print(json.dumps(res))
        return 0
    sizes = [int(a) for a in args] or [100, 300, 1000]
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
