"""Client download throughput: 1, 2 and 4 sources against raw asyncio TCP, on loopback.

Starts 4 ``kadshare-node`` processes sharing the same random file (256 MiB by
default), then downloads it with ``pclient`` using 1, 2 and 4 sources (the first N
providers), each verified chunk by chunk and in full, and finally streams the same
bytes over a plain asyncio TCP connection (a sender process, the receiver writing to a
file, no hashing) as the ceiling. Prints MB/s (10^6 bytes/s) per case, best of
``--repeat`` runs, and the ratios the issue asks for:

    .venv/bin/python benchmarks/client_bench.py [--size-mib 256] [--repeat 3]

Targets: 4 sources >= 0.7 x raw TCP; more sources never slower than 1 source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pclient import DownloadConfig, download_file  # noqa: E402

RAW_BLOCK = 1024 * 1024

SENDER = r"""
import asyncio, sys
path, = sys.argv[1:]
async def main():
    async def serve(reader, writer):
        with open(path, "rb") as fh:
            while data := fh.read(1 << 20):
                writer.write(data)
                await writer.drain()
        writer.close()
        await writer.wait_closed()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def make_file(path: Path, size: int) -> None:
    """Random content (incompressible), written in 4 MiB blocks."""
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 4 * 1024 * 1024))
            fh.write(block)
            left -= len(block)


async def start_peer(workdir: Path, index: int, src: Path, bootstrap: str | None
                     ) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    share = workdir / f"share{index}"
    share.mkdir()
    os.link(src, share / src.name)
    args = [sys.executable, "-m", "pserver.cli", "--share", str(share), "--data",
            str(workdir / f"data{index}"), "--dht-port", "0", "--grpc-port", "0",
            "--rest-port", "0", "--log-level", "error"]
    if bootstrap:
        args += ["--bootstrap", bootstrap]
    proc = await asyncio.create_subprocess_exec(*args, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 300)  # type: ignore[union-attr]
    if not line:
        raise RuntimeError("kadshare-node did not start")
    return proc, json.loads(line)


async def raw_tcp(src: Path, out: Path, size: int) -> float:
    """Seconds to receive the file over one plain asyncio TCP stream into a file."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER, str(src), stdout=asyncio.subprocess.PIPE)
    try:
        port = int(await asyncio.wait_for(proc.stdout.readline(), 60))  # type: ignore[union-attr]
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = 0
        with open(out, "wb") as fh:  # noqa: ASYNC230 - the baseline writes like the client
            while data := await reader.read(RAW_BLOCK):
                fh.write(data)
                got += len(data)
        elapsed = time.perf_counter() - start
        writer.close()
        if got != size:
            raise RuntimeError(f"raw TCP received {got} bytes")
        return elapsed
    finally:
        proc.kill()
        await proc.wait()


async def bench(size_mib: int, repeat: int, counts: list[int]) -> None:
    size = size_mib * 1024 * 1024
    workdir = Path(tempfile.mkdtemp(prefix="kadshare-bench-"))
    procs: list[asyncio.subprocess.Process] = []
    try:
        src = workdir / "payload.bin"
        make_file(src, size)
        t0 = time.perf_counter()
        file_id = await asyncio.to_thread(_sha256, src)
        print(f"file: {size_mib} MiB, id {file_id[:16]}…, hashed in "
              f"{time.perf_counter() - t0:.2f} s", flush=True)
        infos = []
        for i in range(max(counts)):
            boot = f"127.0.0.1:{infos[0]['dht_port']}" if infos else None
            proc, info = await start_peer(workdir, i, src, boot)
            procs.append(proc)
            infos.append(info)
        grpcs = [f"127.0.0.1:{info['grpc_port']}" for info in infos]
        print(f"peers: {len(grpcs)} kadshare-node processes", flush=True)
        out = workdir / "out"
        results: dict[str, float] = {}
        for n in counts:
            best = float("inf")
            for _ in range(repeat):
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                result = await download_file(file_id, out, grpcs[:n],
                                             config=DownloadConfig(sources=n))
                elapsed = time.perf_counter() - start
                assert result.fetched_bytes == size and not result.dropped
                best = min(best, elapsed)
            results[f"{n} source(s)"] = size / best / 1e6
            print(f"  {n} source(s): {results[f'{n} source(s)']:8.1f} MB/s", flush=True)
        best = float("inf")
        for _ in range(repeat):
            best = min(best, await raw_tcp(src, workdir / "raw.bin", size))
            (workdir / "raw.bin").unlink()
        raw = size / best / 1e6
        print(f"  raw asyncio TCP: {raw:8.1f} MB/s", flush=True)
        print()
        print("| case | MB/s | x raw TCP | x 1 source |")
        print("|---|---:|---:|---:|")
        one = results.get("1 source(s)")
        for case, rate in results.items():
            rel = f"{rate / one:.2f}" if one else "-"
            print(f"| {case} | {rate:.1f} | {rate / raw:.2f} | {rel} |")
        print(f"| raw asyncio TCP | {raw:.1f} | 1.00 | - |")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(4 * 1024 * 1024):
            digest.update(data)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sources", default="1,2,4", help="comma-separated source counts")
    args = parser.parse_args()
    counts = [int(x) for x in args.sources.split(",")]
    asyncio.run(bench(args.size_mib, args.repeat, counts))


if __name__ == "__main__":
    main()
