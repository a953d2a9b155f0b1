"""Soak: N real ``kadshare-node`` processes under continuous lookups, downloads and churn.

Not a test: it runs for ``--duration`` seconds (bounded) and prints what a person
operating the network would want to know after a long day:

* memory (RSS) of every peer that stayed up, at the end of warm-up and at the end, and
  its growth (target: flat after warm-up);
* lookups (``/providers`` and ``/search`` on a random peer for a random file): how many,
  how many failed, and how many failures are *unexplained* (some provider of the file
  had been up for the grace period, so the index should have known it);
* downloads with the client library (multi-source, verified): ok / failed;
* churn: peers killed (SIGKILL or SIGTERM, alternating) and restarted on the same data
  folder; errors logged by the peers (lines with ERROR or Traceback).

Usage::

    .venv/bin/python benchmarks/soak.py --peers 30 --duration 300 [--warmup 60]
        [--churn-every 15] [--seed 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kadcommon.merkle import file_id_of_bytes
from pclient import Client, ClientError
from pserver.launch import LaunchError, NodeProcess, NodeSpec

MAX_DURATION = 4 * 3600
GRACE = 30.0  # seconds a provider must have been up before a miss counts as unexplained


@dataclass
class Peer:
    index: int
    root: Path
    churnable: bool
    files: list[str] = field(default_factory=list)
    node: NodeProcess | None = None
    info: dict[str, Any] = field(default_factory=dict)
    up_since: float = 0.0
    restarts: int = 0
    rss_warm: int = 0
    rss_mid: int = 0
    rss_end: int = 0

    @property
    def share(self) -> Path:
        return self.root / "share"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.info['rest_port']}"

    def alive(self) -> bool:
        return self.node is not None and self.node.alive()

    def rss_kib(self) -> int:
        if not self.alive():
            return 0
        assert self.node is not None
        try:
            for line in Path(f"/proc/{self.node.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return 0
        return 0


async def start_peer(peer: Peer, bootstrap: Peer | None) -> None:
    """Start (or restart) ``peer`` on its folders; wait for its JSON line (bounded)."""
    first_run = not (peer.data / "contacts.msgpack").exists()
    spec = NodeSpec(data=peer.data, share=peer.share,
                    bootstrap=[f"127.0.0.1:{bootstrap.info['dht_port']}"]
                    if bootstrap is not None and first_run else [], name=f"peer {peer.index}")
    try:
        peer.node = await asyncio.to_thread(
            NodeProcess.launch, spec, stdout=peer.root / f"stdout.{peer.restarts}.log",
            stderr=peer.root / "stderr.log", timeout=120)
    except LaunchError as exc:
        raise RuntimeError(f"{exc} (see {peer.root / 'stderr.log'})") from exc
    peer.info = peer.node.info
    peer.up_since = time.monotonic()


@dataclass
class Tally:
    lookups: int = 0
    lookup_errors: int = 0  # HTTP error or timeout
    misses: int = 0  # answered, but no provider known
    unexplained: int = 0  # a miss while some provider had been up >= GRACE
    searches: int = 0
    search_misses: int = 0
    downloads_ok: int = 0
    downloads_failed: int = 0
    download_bytes: int = 0
    kills: int = 0
    failures: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.root = root
        n_churn = max(1, args.peers // 3)
        self.peers = [Peer(i, root / f"peer{i}", churnable=i >= args.peers - n_churn)
                      for i in range(args.peers)]
        self.catalog: dict[str, tuple[str, list[int]]] = {}  # file_id -> (name, provider idx)
        self.tally = Tally()
        self.events: list[str] = []
        self.stop_at = 0.0
        self.t0 = time.monotonic()

    def make_files(self) -> None:
        """Each peer shares two files; a third of the files are shared by three peers."""
        words = ["alpha", "bravo", "delta", "echo", "golf", "hotel", "kilo", "lima"]
        for peer in self.peers:
            peer.share.mkdir(parents=True)
            peer.data.mkdir(parents=True)
        for i in range(len(self.peers) * 2 // 3 + 1):
            size = self.rng.randrange(64 * 1024, 768 * 1024)
            data = self.rng.randbytes(size)
            name = f"{self.rng.choice(words)} {self.rng.choice(words)} soak{i}.bin"
            fid = file_id_of_bytes(data)
            copies = 3 if i % 3 == 0 else 1
            holders = self.rng.sample(range(len(self.peers)), copies)
            for h in holders:
                (self.peers[h].share / name).write_bytes(data)
                self.peers[h].files.append(fid)
            self.catalog[fid] = (name, holders)

    def stable_live(self) -> list[Peer]:
        return [p for p in self.peers if p.alive() and not p.churnable]

    def explained(self, fid: str) -> bool:
        """True if no provider of ``fid`` has been up for GRACE seconds."""
        now = time.monotonic()
        return not any(self.peers[h].alive() and now - self.peers[h].up_since >= GRACE
                       for h in self.catalog[fid][1])

    def holders(self, fid: str) -> str:
        """Who provides ``fid``: index, alive, seconds up, restarts (to explain a miss)."""
        now = time.monotonic()
        return ", ".join(
            f"peer {h} {'up' if self.peers[h].alive() else 'down'} "
            f"{max(0.0, now - self.peers[h].up_since):.0f}s restarts={self.peers[h].restarts}"
            for h in self.catalog[fid][1]
        )

    async def lookups(self, http: httpx.AsyncClient) -> None:
        while time.monotonic() < self.stop_at:
            await asyncio.sleep(self.args.lookup_every)
            asker = self.rng.choice(self.stable_live())
            fid = self.rng.choice(list(self.catalog))
            name = self.catalog[fid][0]
            t = self.tally
            t.lookups += 1
            try:
                reply = await http.get(f"{asker.url}/providers/{fid}")
                reply.raise_for_status()
                provs = reply.json()["providers"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                t.lookup_errors += 1
                t.failures.append(f"providers via peer {asker.index}: {exc!r:.120}")
                continue
            if not provs:
                t.misses += 1
                if not self.explained(fid):
                    t.unexplained += 1
                    t.failures.append(f"no provider of {name} via peer {asker.index} "
                                      f"at t+{time.monotonic() - self.t0:.0f}s; "
                                      f"{self.holders(fid)}")
            t.searches += 1
            try:
                reply = await http.get(f"{asker.url}/search", params={"q": name})
                reply.raise_for_status()
                hits = {h["file_id"] for h in reply.json()["results"]}
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                t.lookup_errors += 1
                t.failures.append(f"search via peer {asker.index}: {exc!r:.120}")
                continue
            if fid not in hits and not self.explained(fid):
                t.search_misses += 1
                t.failures.append(f"search missed {name} via peer {asker.index} "
                                  f"at t+{time.monotonic() - self.t0:.0f}s; {self.holders(fid)}")

    async def downloads(self) -> None:
        dest = self.root / "downloads"
        dest.mkdir()
        while time.monotonic() < self.stop_at:
            await asyncio.sleep(self.args.download_every)
            asker = self.rng.choice(self.stable_live())
            fid = self.rng.choice(list(self.catalog))
            if self.explained(fid):
                continue
            out = dest / f"d{self.tally.downloads_ok + self.tally.downloads_failed}"
            out.mkdir()
            try:
                async with Client(asker.url) as client:
                    res = await asyncio.wait_for(client.download(fid, out, sources=3), 120)
                self.tally.downloads_ok += 1
                self.tally.download_bytes += res.size
            except (ClientError, asyncio.TimeoutError, OSError) as exc:
                self.tally.downloads_failed += 1
                self.tally.failures.append(f"download {fid[:8]} via {asker.index}: {exc!r:.160}")
            shutil.rmtree(out, ignore_errors=True)

    async def churn(self) -> None:
        pool = [p for p in self.peers if p.churnable]
        graceful = False
        while time.monotonic() < self.stop_at - self.args.churn_every:
            await asyncio.sleep(self.args.churn_every)
            victim = self.rng.choice(pool)
            if not victim.alive():
                continue
            assert victim.node is not None
            graceful = not graceful
            victim.up_since = float("inf")  # leaving: its records are being withdrawn
            victim.node.stop(30, signal.SIGTERM if graceful else signal.SIGKILL)
            self.tally.kills += 1
            self.events.append(f"t+{time.monotonic() - self.t0:.0f}s "
                               f"{'TERM' if graceful else 'KILL'} peer {victim.index}")
            await asyncio.sleep(self.rng.uniform(2, self.args.churn_every))
            victim.restarts += 1
            try:
                await start_peer(victim, self.peers[0])
            except RuntimeError as exc:
                self.tally.failures.append(f"restart: {exc}")

    async def sample_memory(self, warm_at: float) -> None:
        """RSS of the peers that never churn: at the end of warm-up and half way after it."""
        mid_at = warm_at + (self.stop_at - warm_at) / 2
        warm_done = mid_done = False
        while time.monotonic() < self.stop_at and not mid_done:
            await asyncio.sleep(1.0)
            if not warm_done and time.monotonic() >= warm_at:
                for p in self.peers:
                    p.rss_warm = p.rss_kib() if not p.churnable else 0
                warm_done = True
            if warm_done and time.monotonic() >= mid_at:
                for p in self.peers:
                    p.rss_mid = p.rss_kib() if not p.churnable else 0
                mid_done = True

    async def run(self) -> dict[str, Any]:
        self.make_files()
        started = time.monotonic()
        await start_peer(self.peers[0], None)
        for batch in range(1, len(self.peers), 5):
            await asyncio.gather(*(start_peer(p, self.peers[0])
                                   for p in self.peers[batch:batch + 5]))
        start_seconds = time.monotonic() - started
        self.t0 = time.monotonic()
        self.stop_at = time.monotonic() + self.args.duration
        warm_at = time.monotonic() + self.args.warmup
        async with httpx.AsyncClient(timeout=60.0) as http:
            await asyncio.gather(self.lookups(http), self.downloads(), self.churn(),
                                 self.sample_memory(warm_at))
        for p in self.peers:
            p.rss_end = p.rss_kib() if not p.churnable else 0
        return self.report(start_seconds)

    def report(self, start_seconds: float) -> dict[str, Any]:
        stable = [p for p in self.peers
                  if not p.churnable and p.rss_warm and p.rss_mid and p.rss_end]
        growth = [p.rss_end - p.rss_warm for p in stable]
        first_half = [p.rss_mid - p.rss_warm for p in stable]
        second_half = [p.rss_end - p.rss_mid for p in stable]
        measured = self.args.duration - self.args.warmup
        logged = 0
        for p in self.peers:
            text = (p.root / "stderr.log").read_text(errors="replace")
            logged += sum(1 for line in text.splitlines()
                          if " ERROR " in line or "Traceback" in line)
        t = self.tally
        return {
            "peers": len(self.peers), "churnable": sum(p.churnable for p in self.peers),
            "duration_s": self.args.duration, "warmup_s": self.args.warmup,
            "start_all_s": round(start_seconds, 1),
            "rss_warm_kib_median": int(statistics.median(p.rss_warm for p in stable)),
            "rss_end_kib_median": int(statistics.median(p.rss_end for p in stable)),
            "rss_growth_kib_median": int(statistics.median(growth)),
            "rss_growth_kib_max": max(growth),
            "rss_growth_kib_first_half_median": int(statistics.median(first_half)),
            "rss_growth_kib_second_half_median": int(statistics.median(second_half)),
            "measured_s": measured,
            "lookups": t.lookups, "lookup_errors": t.lookup_errors, "misses": t.misses,
            "unexplained_misses": t.unexplained, "searches": t.searches,
            "unexplained_search_misses": t.search_misses,
            "downloads_ok": t.downloads_ok, "downloads_failed": t.downloads_failed,
            "download_mib": round(t.download_bytes / 2**20, 1),
            "kills": t.kills, "error_lines_logged": logged,  # final stop of all peers included
            "failures": t.failures[:30],
            "churn_events": self.events,
        }

    def stop_all(self) -> None:
        nodes = [p.node for p in self.peers if p.node is not None]
        with ThreadPoolExecutor(max(1, len(nodes))) as pool:  # they leave in parallel
            list(pool.map(lambda node: node.stop(20), nodes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=30)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load (bounded)")
    ap.add_argument("--warmup", type=float, default=60.0)
    ap.add_argument("--churn-every", type=float, default=15.0)
    ap.add_argument("--lookup-every", type=float, default=0.25)
    ap.add_argument("--download-every", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--keep", action="store_true", help="keep the peers' folders")
    args = ap.parse_args(argv)
    if not 3 <= args.peers <= 200 or not 10 <= args.duration <= MAX_DURATION:
        ap.error(f"--peers 3..200 and --duration 10..{MAX_DURATION}")
    args.warmup = min(args.warmup, args.duration / 2)
    root = Path(tempfile.mkdtemp(prefix="kadshare-soak-"))
    soak = Soak(args, root)
    try:
        result = asyncio.run(soak.run())
    finally:
        soak.stop_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for key, value in result.items():
        if key not in ("failures", "churn_events"):
            print(f"{key:34s} {value}")
    for line in result["failures"]:
        print("  failure:", line)
    if result["failures"]:
        print("  churn:", "; ".join(result["churn_events"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
