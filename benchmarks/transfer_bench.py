"""Transfer throughput: gRPC download from one kadshare peer vs a raw asyncio TCP socket.

Both servers run as separate processes on 127.0.0.1 and send the same file; the client
runs here. Rows (MB/s with 1 MB = 10^6 bytes, ratio to raw TCP, and CPU seconds per GiB
of the server process and of this client process):

* ``raw tcp``           asyncio streams, 1 MiB reads/writes, bytes counted and dropped
* ``raw tcp + sha256``  the same, hashing the stream inline (the cost of verifying)
* ``grpc N stream(s)``  ``GetInfo`` + N ranged ``Download`` streams (one channel each)
                        from a real ``kadshare-node``; every 1 MiB chunk checked against
                        its Merkle leaf in a worker thread; bytes dropped. ``stub decode``
                        uses the generated stub, ``zero-copy`` decodes the wire bytes
                        into a memoryview (two payload copies fewer)
* ``pclient get``       the real client path (``pclient.download.download_file``):
                        verification, ``.part`` file on disk, rename (no second pass);
                        with its default streams per source (1), and with 2

The gRPC rows run twice, against two peers started alike but for ``--insecure-transfers``:
``tls`` (the default: TLS bound to the node identity, docs/SECURITY.md) and ``plain``;
the last table gives each TLS row's rate as a ratio of its plaintext twin.

Rounds are interleaved (each round runs every row once) and the best of each row is kept,
because other work may share the cores. Optionally (``--idle-files N``) the resident
memory of an idle peer sharing N small files.

    .venv/bin/python benchmarks/transfer_bench.py --rounds 5      # 256 MiB
    .venv/bin/python benchmarks/transfer_bench.py --skip-transfer --idle-files 1000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kadcommon.merkle import ChunkHasher, leaf_hash  # noqa: E402
from pclient.download.wire import DOWNLOAD_METHOD, decode_chunk  # noqa: E402
from pclient.grpcutil import Dialer  # noqa: E402
from protos import kadshare_pb2, kadshare_pb2_grpc  # noqa: E402
from pserver.launch import LaunchError, NodeProcess, NodeSpec  # noqa: E402

MiB = 1024 * 1024
START_TIMEOUT = 120.0
RPC_TIMEOUT = 300.0


# ---- raw TCP baseline (server runs in a child process: ``--raw-server PATH``) -----------


async def raw_server(path: Path) -> None:
    """Send the whole file to every connection with 1 MiB read()+write()+drain()."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                data = os.read(fd, MiB)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            os.close(fd)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await asyncio.sleep(3600)


async def raw_client(port: int, hash_it: bool) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * MiB)
    total = 0
    digest = hashlib.sha256()
    while True:
        data = await reader.read(4 * MiB)
        if not data:
            break
        total += len(data)
        if hash_it:
            digest.update(data)
    writer.close()
    return total, digest.hexdigest()


# ---- gRPC client paths --------------------------------------------------------------------


async def grpc_download(address: str, file_id: str, streams: int, zero_copy: bool = True,
                        dialer: Dialer | None = None) -> int:
    """GetInfo, then ``streams`` ranged Downloads (one channel each); verify every chunk.

    ``zero_copy`` decodes ``Chunk`` messages by hand from the raw bytes (a memoryview of
    the payload is hashed); otherwise the generated stub decodes them (two more copies).
    """
    if dialer is None:
        dialer = Dialer()
        await dialer.verify([address])
    channels = [dialer.channel(address) for _ in range(streams)]
    try:
        stub = kadshare_pb2_grpc.TransferServiceStub(channels[0])
        info = await stub.GetInfo(kadshare_pb2.InfoRequest(file_id=file_id), timeout=30)
        chunk, size = info.chunk_size, info.size
        hashes = list(info.chunk_hashes)
        per = -(-len(hashes) // streams)

        async def fetch(index: int) -> int:
            first, last = index * per, min(len(hashes), (index + 1) * per)
            if first >= last:
                return 0
            offset, end = first * chunk, min(size, last * chunk)
            request = kadshare_pb2.DownloadRequest(
                file_id=file_id, offset=offset, length=end - offset
            )
            if zero_copy:
                method = channels[index].unary_stream(
                    DOWNLOAD_METHOD,
                    request_serializer=kadshare_pb2.DownloadRequest.SerializeToString,
                    response_deserializer=None,
                )
                call = method(request, timeout=RPC_TIMEOUT)
            else:
                call = kadshare_pb2_grpc.TransferServiceStub(channels[index]).Download(
                    request, timeout=RPC_TIMEOUT
                )
            pending = bytearray()
            n, got = first, 0
            checks: list[asyncio.Future[bool]] = []
            async for msg in call:
                if zero_copy:
                    at, data = decode_chunk(msg)
                else:
                    at, data = msg.offset, msg.data
                if at != offset + got:
                    raise SystemExit(f"chunk at {at}, expected {offset + got}")
                got += len(data)
                if not pending and len(data) == chunk:
                    piece = data  # a whole chunk in one message: hash it in place
                else:
                    pending += data
                    if len(pending) < chunk and offset + got < end:
                        continue
                    piece, pending = bytes(pending), bytearray()
                checks.append(asyncio.to_thread(_check, piece, hashes[n]))
                n += 1
                if len(checks) >= 8:
                    if not all(await asyncio.gather(*checks)):
                        raise SystemExit("chunk hash mismatch")
                    checks = []
            if not all(await asyncio.gather(*checks)):
                raise SystemExit("chunk hash mismatch")
            return got

        totals = await asyncio.gather(*(fetch(i) for i in range(streams)))
        return sum(totals)
    finally:
        for ch in channels:
            await ch.close()


def _check(piece: bytes | memoryview, want: bytes) -> bool:
    return leaf_hash(piece) == want


async def pclient_get(address: str, file_id: str, dest: Path, tls: bool = True,
                      streams: int | None = None) -> int:
    """The real client; ``streams``: Download streams per source (None: the default)."""
    from pclient.download import DownloadConfig, download_file

    config = DownloadConfig() if streams is None else DownloadConfig(streams_per_source=streams)
    result = await download_file(file_id, dest, [address], dialer=Dialer(tls=tls), config=config)
    size = result.size
    result.path.unlink()
    return size


# ---- processes ----------------------------------------------------------------------------


def start_node(tmp: Path, share: Path, *flags: str) -> NodeProcess:
    spec = NodeSpec(data=tmp / "data", share=share, extra=("--log-level", "warning", *flags))
    try:
        return NodeProcess.launch(spec, stdout=tmp / "node.out", stderr=tmp / "node.err",
                                  timeout=START_TIMEOUT)
    except LaunchError as exc:
        raise SystemExit(str(exc)) from exc


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


Job = tuple[str, int, Callable[[], Coroutine[Any, Any, int]]]  # label, server pid, job


def process_cpu(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def interleaved(rounds: int, size: int, jobs: list[Job]) -> list[tuple[str, float, float,
                                                                             float]]:
    """Per job: best MB/s, and least server and client CPU seconds per GiB, over ``rounds``.

    Jobs alternate within a round so a change in machine load hits all of them alike
    (other work shares these cores). CPU seconds do not depend on that load, so they show
    where the time goes even on a busy machine.
    """
    best = {label: 0.0 for label, _, _ in jobs}
    server_cpu = {label: float("inf") for label, _, _ in jobs}
    client_cpu = {label: float("inf") for label, _, _ in jobs}
    gib = size / 2**30
    for round_no in range(rounds):
        order = list(jobs)
        if round_no % 2:  # neighbouring disk rows swap places (see ``measure``)
            for i in range(len(order) - 1):
                if "pclient" in order[i][0] and "pclient" in order[i + 1][0]:
                    order[i], order[i + 1] = order[i + 1], order[i]
        for label, pid, job in order:
            s0, c0, started = process_cpu(pid), own_cpu(), time.perf_counter()
            got = await job()
            elapsed = time.perf_counter() - started
            s1, c1 = process_cpu(pid), own_cpu()
            if got != size:
                raise SystemExit(f"{label}: received {got} bytes, expected {size}")
            best[label] = max(best[label], size / elapsed / 1e6)
            server_cpu[label] = min(server_cpu[label], (s1 - s0) / gib)
            client_cpu[label] = min(client_cpu[label], (c1 - c0) / gib)
    return [(label, best[label], server_cpu[label], client_cpu[label]) for label, _, _ in jobs]


def transfer(args: argparse.Namespace, tmp: Path) -> None:
    """Write the file, start the peer and the raw server, measure, stop them."""
    size = args.size_mib * MiB
    share = tmp / "share"
    share.mkdir()
    path = share / "payload.bin"
    hasher = ChunkHasher()
    with open(path, "wb") as handle:
        for _ in range(args.size_mib):
            block = os.urandom(MiB)
            hasher.update(block)
            handle.write(block)
    (tmp / "plain").mkdir()
    node = start_node(tmp, share)
    plain = start_node(tmp / "plain", share, "--insecure-transfers")
    raw = subprocess.Popen(
        [sys.executable, __file__, "--raw-server", str(path)], stdout=subprocess.PIPE
    )
    try:
        assert raw.stdout is not None
        raw_port = int(raw.stdout.readline())
        asyncio.run(measure(args, tmp, size, (raw.pid, raw_port),
                            (node.process.pid, node.grpc_address),
                            (plain.process.pid, plain.grpc_address),
                            hasher.finish()))
    finally:
        node.stop(30)
        plain.stop(30)
        raw.kill()
        raw.wait(timeout=30)


async def measure(
    args: argparse.Namespace, tmp: Path, size: int, raw: tuple[int, int],
    node: tuple[int, str], plain: tuple[int, str], file_id: str,
) -> None:
    raw_pid, raw_port = raw
    # warm the page cache and all three servers
    await raw_client(raw_port, False)
    dest = tmp / "dest"
    await asyncio.to_thread(dest.mkdir)
    jobs: list[Job] = [
        ("raw tcp", raw_pid, lambda: _first(raw_client(raw_port, False))),
        ("raw tcp + sha256", raw_pid, lambda: _first(raw_client(raw_port, True))),
    ]
    for mode, (pid, address) in (("tls", node), ("plain", plain)):
        dialer = Dialer(tls=mode == "tls")
        if await dialer.verify([address]):
            raise SystemExit(f"the {mode} peer at {address} did not prove its identity")
        await grpc_download(address, file_id, 1, dialer=dialer)
        jobs.append((f"{mode} grpc 1 stream, stub decode", pid,
                     lambda a=address, d=dialer: grpc_download(a, file_id, 1, False, d)))
        for streams in args.streams:
            label = f"{mode} grpc {streams} stream{'s' if streams > 1 else ''}, zero-copy"
            jobs.append((label, pid, lambda a=address, d=dialer, s=streams:
                         grpc_download(a, file_id, s, True, d)))
        # (the first disk row after the memory-only rows pays for it: up to ~1.4 s/GiB
        # more client CPU, in the kernel under pwrite; so the two rows alternate places
        # from round to round, see ``interleaved``)
        jobs.append((f"{mode} pclient get (disk, verified)", pid,
                     lambda a=address, t=mode == "tls": pclient_get(a, file_id, dest, t)))
        jobs.append((f"{mode} pclient get, 2 streams", pid,
                     lambda a=address, t=mode == "tls": pclient_get(a, file_id, dest, t, 2)))
    rows = await interleaved(args.rounds, size, jobs)
    load = os.getloadavg()[0]
    base_rate = rows[0][1]
    print(f"file: {args.size_mib} MiB over 127.0.0.1, best of {args.rounds} interleaved "
          f"rounds; {os.cpu_count()} cores, load average {load:.1f} at the end")
    print(f"  {'':36s} {'MB/s':>6s} {'ratio':>6s}   CPU s/GiB: {'server':>6s} {'client':>6s}")
    for label, mbps, server, client in rows:
        print(f"  {label:36s} {mbps:6.0f} {mbps / base_rate:6.2f}   {'':10s} {server:6.2f} "
              f"{client:6.2f}")
    print("  grpc rows check every 1 MiB chunk against GetInfo's SHA-256 (in worker threads);"
          " CPU s/GiB is the least seen (10 ms ticks)")
    rates = {label: (mbps, server, client) for label, mbps, server, client in rows}
    print("TLS cost: each tls row against its plaintext twin (same run)")
    print(f"  {'':36s} {'MB/s ratio':>10s}   CPU s/GiB tls-plain: {'server':>6s} {'client':>6s}")
    for label, (mbps, server, client) in rates.items():
        if label.startswith("tls "):
            twin = rates["plain " + label[4:]]
            print(f"  {label[4:]:36s} {mbps / twin[0]:10.2f}   {'':21s}"
                  f"{server - twin[1]:+6.2f} {client - twin[2]:+6.2f}")


def idle_memory(count: int, tmp: Path) -> None:
    """RSS of a peer that shares ``count`` small files and does nothing else."""
    share = tmp / "idle-share"
    share.mkdir()
    for i in range(count):
        (share / f"file-{i:05d}.txt").write_bytes(f"small file number {i}\n".encode() * 8)
    (tmp / "idle").mkdir()
    node = start_node(tmp / "idle", share)
    try:
        time.sleep(5.0)  # let the scan and the announcements settle
        rss = rss_kib(node.process.pid) / 1024
        print(f"idle peer sharing {count} small files: RSS {rss:.1f} MiB")
    finally:
        node.stop(30)


async def _first(coro: Coroutine[Any, Any, tuple[int, str]]) -> int:
    return (await coro)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--idle-files", type=int, default=0,
                        help="also measure an idle peer sharing this many small files")
    parser.add_argument("--skip-transfer", action="store_true")
    parser.add_argument("--raw-server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server:
        asyncio.run(raw_server(Path(args.raw_server)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="kadshare-bench-"))
    try:
        if not args.skip_transfer:
            transfer(args, tmp)
        if args.idle_files:
            idle_memory(args.idle_files, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
