"""Flash crowd: one seeder capped at --max-upload-rate, N downloaders started together.

Starts N+1 ``kadshare-node`` processes on 127.0.0.1 (the seeder shares a random file
with ``--max-upload-rate RATE``; each downloader has a node of its own), then, in one
run, times

  1. one download alone from the seeder,
  2. all N downloads started together without swarming (``Client.download(swarm=False)``:
     nobody serves a download in progress, everyone queues on the seeder's cap),
  3. all N started together with swarming (each downloader's node serves the chunks
     it has verified; clients fetch rarest-first from the seeder and from each other),

and prints the last finisher of each and the ratio to the single download (issue 12's
target for 3: <= 2). Every downloader is its own process (the library through its
node's REST API and token), released together after it started; every file is checked
against the file id after the clock stops.

    nice -n 10 .venv/bin/python benchmarks/flash_crowd.py [--downloaders 8]
        [--size-mib 128] [--rate 20M] [--sources 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from payload import shared_payload  # noqa: E402  (benchmarks/payload.py)

from kadcommon.merkle import file_id_of_path  # noqa: E402
from kadcommon.units import parse_rate  # noqa: E402
from pserver.launch import NodeProcess, NodeSpec, python_command  # noqa: E402

READY_TIMEOUT = 60.0
PHASE_TIMEOUT = 900.0


async def child(node_url: str, token: str, file_id: str, dest: str, swarm: bool,
                sources: int) -> None:
    """One downloader: say ready, wait for the go line, download, print a JSON result."""
    from pclient.client import Client
    from pclient.download import DownloadConfig

    config = DownloadConfig(sources=sources, stall_timeout=60.0, info_timeout=10.0)
    async with Client(node_url, token=token) as client:
        await client.status()  # connection and imports warm before the start line
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        started = time.time()
        result = await client.download(file_id, dest, config=config, swarm=swarm)
        ended = time.time()
    print(json.dumps({"started": started, "ended": ended, "path": str(result.path),
                      "sources": result.sources}), flush=True)


def run_phase(label: str, nodes: list[NodeProcess], seeder: NodeProcess, file_id: str,
              work: Path, swarm: bool, sources: int) -> dict[str, float]:
    """Start one downloader process per node, release them together, time them."""
    procs = []
    for i, node in enumerate(nodes):
        dest = work / f"{label}-{i}"
        token = (node.data / "token").read_text().strip()
        argv = [sys.executable, __file__, "--child", node.rest_url, token, file_id, str(dest),
                "--sources", str(sources)] + ([] if swarm else ["--no-swarm"])
        procs.append(subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready" or time.monotonic() > deadline:
                raise SystemExit(f"{label}: a downloader did not start ({line!r})")
        go = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=PHASE_TIMEOUT)
            if proc.returncode:
                raise SystemExit(f"{label}: a download failed (exit {proc.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ends = [r["ended"] - go for r in results]
    for r in results:  # verified chunk by chunk already; the whole file once more here
        if file_id_of_path(Path(r["path"])) != file_id:
            raise SystemExit(f"{label}: {r['path']} does not match the file id")
        Path(r["path"]).unlink()
    total = sum(sum(r["sources"].values()) for r in results)
    from_peers = sum(n for r in results for a, n in r["sources"].items()
                     if a != seeder.grpc_address)
    return {"last": max(ends), "mean": sum(ends) / len(ends), "peer_share": from_peers / total}


def wait_found(nodes: list[NodeProcess], file_id: str) -> None:
    """Until every downloader's node finds the seeder's record (bounded)."""
    import httpx

    for node in nodes:
        for _ in range(120):
            reply = httpx.get(f"{node.rest_url}/providers/{file_id}", timeout=10.0)
            if reply.status_code == 200 and reply.json().get("providers"):
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"{node.rest_url} never found the seeder's record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--downloaders", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rate", default="20M")
    parser.add_argument("--sources", type=int, default=8)
    args = parser.parse_args()
    cap = parse_rate(args.rate)
    work = Path(tempfile.mkdtemp(prefix="kadshare-crowd-"))
    nodes: list[NodeProcess] = []
    load_before = os.getloadavg()
    try:
        share = work / "seed-share"
        src, file_id = shared_payload(share, "crowd.bin", args.size_mib)
        quiet = ("--settle", "0", "--log-level", "error")
        seeder = NodeProcess.launch(
            NodeSpec(data=work / "seed-data", share=share, command=python_command(),
                     cwd=ROOT, extra=(*quiet, "--max-upload-rate", args.rate)),
            stdout=work / "seed.out")
        nodes.append(seeder)
        crowd = []
        for i in range(args.downloaders):
            (work / f"dl{i}-share").mkdir()
            node = NodeProcess.launch(
                NodeSpec(data=work / f"dl{i}-data", share=work / f"dl{i}-share",
                         command=python_command(), cwd=ROOT, extra=quiet,
                         bootstrap=[seeder.bootstrap_address]),
                stdout=work / f"dl{i}.out")
            nodes.append(node)
            crowd.append(node)
        wait_found(crowd, file_id)
        single = run_phase("single", crowd[:1], seeder, file_id, work, False, args.sources)
        plain = run_phase("no-swarm", crowd, seeder, file_id, work, False, args.sources)
        swarm = run_phase("swarm", crowd, seeder, file_id, work, True, args.sources)
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    n = args.downloaders
    print(f"flash crowd: 1 seeder at --max-upload-rate {args.rate} ({cap / 2**20:.1f} MiB/s), "
          f"{n} downloaders, {args.size_mib} MiB, --sources {args.sources}")
    print(f"ideal single download: {args.size_mib * 2**20 / cap:.2f} s; load average "
          f"before {load_before[0]:.1f}, after {load_after[0]:.1f} (2 cores)")
    print("| run | last finisher (s) | mean (s) | bytes from other downloaders | last / single |")
    print("|---|---|---|---|---|")
    rows = [("1 download alone", single), (f"{n} at once, no swarming", plain),
            (f"{n} at once, swarming", swarm)]
    for label, r in rows:
        print(f"| {label} | {r['last']:.2f} | {r['mean']:.2f} | {r['peer_share']:.0%} | "
              f"{r['last'] / single['last']:.2f} |")
    print(f"swarming: last finisher / single = {swarm['last'] / single['last']:.2f} "
          f"(target <= 2); without: {plain['last'] / single['last']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        p = argparse.ArgumentParser()
        p.add_argument("--child", nargs=4)
        p.add_argument("--sources", type=int, default=8)
        p.add_argument("--no-swarm", action="store_true")
        a = p.parse_args()
        url, tok, fid, out = a.child
        asyncio.run(child(url, tok, fid, out, not a.no_swarm, a.sources))
    else:
        main()
