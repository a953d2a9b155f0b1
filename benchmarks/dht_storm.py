"""The real-time storm of issue 11: N DHT nodes in one process on real loopback UDP.

All N nodes (``DhtConfig.for_tests()``: refresh 20 s, republish 10 s) join within a few
seconds, 20 of them announce one file each, then for DURATION seconds one
``find_providers`` of a random announced file is started every 0.2 s.  Every WINDOW
seconds the script prints, summed over all nodes, the RPCs sent, the share that timed
out, the lookups finished, their success and p50, and how long the loop lagged behind
a 0.1 s heartbeat (the loop's own overload).  Before the storm fix the periodic jobs of
nodes that joined together ran in step; their waves held the loop past the RPC
timeout and timeouts fed more probing until most RPCs timed out.

Usage: python benchmarks/dht_storm.py [--nodes 300] [--duration 120] [--window 10]
                                      [--seed 1]
The last line is the total: ``TOTAL rpcs=... timeouts=...%  lookups ok=...%``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dht import DhtConfig, DhtNode  # noqa: E402

JOIN_CONCURRENCY = 32
JOIN_TIMEOUT = 30.0
LOOKUP_TIMEOUT = 10.0


def _totals(nodes: list[DhtNode]) -> tuple[int, int]:
    sent = timeouts = 0
    for node in nodes:
        if node.protocol is not None:
            sent += node.protocol.stats["requests_out"]
            timeouts += node.protocol.stats["timeouts"]
    return sent, timeouts


async def main(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    config = DhtConfig.for_tests()
    nodes = [DhtNode(config=config) for _ in range(args.nodes)]
    for node in nodes:
        await node.listen(0, "127.0.0.1")
    gate = asyncio.Semaphore(JOIN_CONCURRENCY)
    t0 = time.monotonic()

    async def join(i: int) -> None:
        async with gate:
            peers = rng.sample(range(i), min(3, i))
            boot = [("127.0.0.1", nodes[j].port) for j in peers]
            try:
                await asyncio.wait_for(nodes[i].bootstrap(boot), JOIN_TIMEOUT)
            except asyncio.TimeoutError:
                pass

    await asyncio.gather(*(join(i) for i in range(1, len(nodes))))
    print(f"joined {len(nodes)} nodes in {time.monotonic() - t0:.1f} s", flush=True)
    files = []
    for i in range(20):
        fid = hashlib.sha256(f"storm-{i}".encode()).hexdigest()
        files.append(fid)
        await nodes[rng.randrange(len(nodes))].announce(fid, f"storm file {i}.bin", i, "h:1")
    print(f"announced {len(files)} files at {time.monotonic() - t0:.1f} s", flush=True)

    results: list[tuple[bool, float]] = []
    lag_max = [0.0]

    async def heartbeat() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            lag_max[0] = max(lag_max[0], time.monotonic() - before - 0.1)

    async def one_lookup() -> None:
        start = time.monotonic()
        fid = rng.choice(files)
        try:
            found = await asyncio.wait_for(
                nodes[rng.randrange(len(nodes))].find_providers(fid), LOOKUP_TIMEOUT)
            ok = bool(found)
        except (asyncio.TimeoutError, Exception):
            ok = False
        results.append((ok, time.monotonic() - start))

    beat = asyncio.ensure_future(heartbeat())
    sent0, to0 = _totals(nodes)
    base_sent, base_to = sent0, to0
    print(f"{'t_s':>5} {'rpcs':>7} {'timeout%':>8} {'lookups':>7} {'ok%':>6} {'p50_ms':>7} "
          f"{'lag_max_s':>9}", flush=True)
    tasks: set[asyncio.Task] = set()
    t_start = time.monotonic()
    windows = max(1, int(args.duration // args.window))
    for w in range(windows):
        window_end = t_start + (w + 1) * args.window
        while time.monotonic() < window_end:
            task = asyncio.ensure_future(one_lookup())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.2)
        sent, to = _totals(nodes)
        done, results[:] = list(results), []
        ok = [d for good, d in done if good]
        share = 100.0 * (to - to0) / max(1, sent - sent0)
        p50 = statistics.median(ok) * 1000 if ok else float("nan")
        print(f"{(w + 1) * args.window:5.0f} {sent - sent0:7d} {share:8.1f} {len(done):7d} "
              f"{100.0 * len(ok) / max(1, len(done)):6.1f} {p50:7.0f} {lag_max[0]:9.2f}",
              flush=True)
        sent0, to0, lag_max[0] = sent, to, 0.0
    beat.cancel()
    for task in list(tasks):
        task.cancel()
    sent, to = _totals(nodes)
    total_share = 100.0 * (to - base_to) / max(1, sent - base_sent)
    print(f"TOTAL rpcs={sent - base_sent} timeouts={total_share:.1f}% "
          f"over {args.duration:.0f} s with {len(nodes)} nodes", flush=True)
    for node in nodes:
        node.stop()
    await asyncio.sleep(0.1)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
