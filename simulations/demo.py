"""``make demo``: a five-peer kadshare network on 127.0.0.1, end to end.

Starts five ``kadshare-node`` processes (port 0 everywhere), shares a few generated
files (one of them from two peers), searches by keyword from a peer that has none of
them, downloads with ``kadshare get``, checks the SHA-256, stops the peers and exits 0.
Any failure prints one line saying what went wrong and exits 1.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kadcommon.merkle import file_id_of_bytes
from pserver.launch import LaunchError, console_script
from simulations.localnet import LocalNetwork, Peer

SEARCH_WORDS = ["holiday", "photos"]
PROPAGATION_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0


class DemoFailed(RuntimeError):
    """A step of the demo did not do what it should."""


def generated_files(seed: int = 7) -> dict[str, bytes]:
    """A few files of random bytes with names worth searching for."""
    rng = random.Random(seed)
    return {
        "Holiday Photos - Beach.jpg": rng.randbytes(3 * 1024 * 1024 + 123),
        "quarterly-report-2026.pdf": rng.randbytes(700 * 1024),
        "kademlia paper notes.txt": rng.randbytes(40 * 1024),
    }


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"


def wait_for_providers(peer: Peer, file_id: str, wanted: int) -> int:
    """Poll the peer's REST search until ``wanted`` providers are indexed (bounded)."""
    deadline = time.monotonic() + PROPAGATION_TIMEOUT
    seen = 0
    with httpx.Client(base_url=peer.rest_url, timeout=10.0) as client:
        while time.monotonic() < deadline:
            reply = client.get("/search", params={"q": " ".join(SEARCH_WORDS)})
            if reply.status_code == 200:
                for hit in reply.json()["results"]:
                    if hit["file_id"] == file_id:
                        seen = int(hit["providers"])
            if seen >= wanted:
                return seen
            time.sleep(0.5)
    raise DemoFailed(
        f"search from peer {peer.index} saw {seen} of {wanted} providers after "
        f"{PROPAGATION_TIMEOUT:.0f} s"
    )


def run_client(peer: Peer, *args: str) -> str:
    """Run the ``kadshare`` CLI against ``peer``; raise with its message on failure."""
    command = [console_script("kadshare"), "--node", peer.rest_url, *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise DemoFailed(f"`kadshare {' '.join(args)}` exited {done.returncode}: "
                         f"{message[-1] if message else 'no output'}")
    return done.stdout


def run_demo(root: Path) -> None:
    files = generated_files()
    wanted_name = "Holiday Photos - Beach.jpg"
    wanted = files[wanted_name]
    file_id = file_id_of_bytes(wanted)
    others = {name: data for name, data in files.items() if name != wanted_name}
    shares = [
        {wanted_name: wanted},
        {wanted_name: wanted, "quarterly-report-2026.pdf": others["quarterly-report-2026.pdf"]},
        {"kademlia paper notes.txt": others["kademlia paper notes.txt"]},
        {},
        {},
    ]
    started = time.monotonic()
    with LocalNetwork(root) as network:
        peers = network.start(shares)
        print(f"kadshare demo: {len(peers)} peers on 127.0.0.1 "
              f"(started in {time.monotonic() - started:.1f} s)")
        for peer, share in zip(peers, shares, strict=True):
            print(f"  peer {peer.index}  node {peer.node_id[:8]}  dht :{peer.info['dht_port']}"
                  f"  grpc :{peer.info['grpc_port']}  rest :{peer.info['rest_port']}"
                  f"  shares {len(share)} file(s)")
        searcher = peers[4]
        providers = wait_for_providers(searcher, file_id, wanted=2)
        print(f"search {' '.join(SEARCH_WORDS)!r} from peer {searcher.index}: "
              f"{wanted_name!r} ({human(len(wanted))}), id {file_id[:12]}..., "
              f"{providers} providers")
        listing = run_client(searcher, "search", *SEARCH_WORDS)
        for line in listing.strip().splitlines():
            print(f"  | {line}")
        out_dir = root / "downloads"
        out_dir.mkdir()
        began = time.monotonic()
        run_client(searcher, "get", file_id, "-o", str(out_dir))
        took = time.monotonic() - began
        fetched = out_dir / wanted_name
        if not fetched.exists():
            raise DemoFailed(f"`kadshare get` exited 0 but {fetched} does not exist")
        digest = file_id_of_bytes(fetched.read_bytes())
        if digest != file_id:
            raise DemoFailed(f"downloaded file has SHA-256 {digest}, expected {file_id}")
        print(f"get {file_id[:12]}... from peer {searcher.index}: {human(len(wanted))} "
              f"in {took:.2f} s, SHA-256 verified")
        codes = network.stop()
    bad = {index: code for index, code in codes.items() if code != 0}
    if bad:
        raise DemoFailed(f"peers did not exit cleanly on SIGTERM: {bad}")
    print(f"stopped {len(codes)} peers, all exited 0")


def main() -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="kadshare-demo-") as tmp:
            run_demo(Path(tmp))
    except (DemoFailed, LaunchError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    print("demo OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
