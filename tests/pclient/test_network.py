"""The client against real kadshare peers (pserver nodes) on loopback.

Four in-process peers: two share the same holiday file, each also shares a different
report, the fourth shares nothing and accepts uploads; the client talks to the fourth.
The ``kadshare`` command runs as a real process against that peer's REST port.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kadcommon.merkle import file_id_of_bytes
from pclient import Client, DownloadConfig, DownloadProgress, NotFound
from pserver.config import NodeConfig
from pserver.launch import AsyncNodeProcess, NodeSpec
from pserver.node import Node
from tests.pclient.cli_runner import run_cli, run_main

HOLIDAY = "holiday photos.bin"


@dataclass
class Net:
    nodes: list[Node]
    url: str
    holiday_id: str
    holiday: bytes
    tmp: Path

    def grpc(self, i: int) -> str:
        return f"127.0.0.1:{self.nodes[i].info['grpc_port']}"


async def poll(predicate, tries: int = 100, pause: float = 0.2) -> bool:
    """Bounded polling for a network state that converges."""
    for _ in range(tries):
        if await predicate():
            return True
        await asyncio.sleep(pause)
    return False


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    rng = random.Random(7)
    holiday = rng.randbytes(5 * 1024 * 1024 + 99)
    nodes: list[Node] = []
    try:
        for i in range(4):
            share = tmp_path / f"share{i}"
            share.mkdir()
            if i in (1, 2):
                (share / HOLIDAY).write_bytes(holiday)
                (share / f"report 202{i + 2}.txt").write_text(f"report number {i}\n" * 100)
            boot = (("127.0.0.1", nodes[0].info["dht_port"]),) if nodes else ()
            nodes.append(await Node.start(NodeConfig(
                data_dir=tmp_path / f"data{i}", share_dir=share, bootstrap=boot,
                accept_uploads=(i == 3),
            )))
        url = f"http://127.0.0.1:{nodes[3].info['rest_port']}"
        net = Net(nodes, url, file_id_of_bytes(holiday), holiday, tmp_path)
        async with Client(url) as client:
            async def ready() -> bool:
                hits = await client.search("holiday")
                by_name = {h["name"]: h for h in hits}
                return (HOLIDAY in by_name and by_name[HOLIDAY]["providers"] >= 2
                        and len(await client.search("report")) >= 2)
            assert await poll(ready), "the index never converged"
        yield net
    finally:
        for node in nodes:
            await node.stop(graceful=False)


class TestCommandsJson:
    async def test_every_command_prints_json_with_the_documented_fields(self, net: Net, capsys):
        u = ["--node", net.url, "--json"]
        dest = net.tmp / "dl"
        n1 = f"http://127.0.0.1:{net.nodes[1].info['rest_port']}"
        runs = [await run_main(capsys, *args) for args in (
            ["status", *u], ["peers", *u], ["ls", *u], ["ls", "--node", n1, "--json"],
            ["search", "holiday", *u], ["providers", net.holiday_id, *u],
        )]
        runs.append(await run_cli("get", net.holiday_id, "-o", str(dest), *u))  # a process
        for code, _out, err in runs:
            assert code == 0, err
        status, peers, ls3, ls1, search, providers, get = (json.loads(r[1]) for r in runs)

        assert {"node_id", "host", "dht_port", "grpc_port", "rest_port", "peers", "files",
                "records"} <= set(status)
        assert len(peers["peers"]) >= 3
        assert all({"node_id", "host", "dht_port"} <= set(p) for p in peers["peers"])
        assert ls3 == {"files": []}
        assert {f["name"] for f in ls1["files"]} == {HOLIDAY, "report 2023.txt"}
        assert all({"file_id", "name", "size"} <= set(f) for f in ls1["files"])

        assert search["query"] == "holiday"
        hit = next(r for r in search["results"] if r["name"] == HOLIDAY)
        assert hit == {"file_id": net.holiday_id, "name": HOLIDAY, "size": len(net.holiday),
                       "providers": 2}

        assert providers["file_id"] == net.holiday_id
        assert {p["grpc"] for p in providers["providers"]} == {net.grpc(1), net.grpc(2)}
        assert all({"node_id", "grpc", "name", "size", "expires"} <= set(p)
                   for p in providers["providers"])

        assert get["size"] == len(net.holiday) and get["name"] == HOLIDAY
        assert (dest / HOLIDAY).read_bytes() == net.holiday  # noqa: ASYNC240

    async def test_tables_are_readable_and_not_found_exits_1(self, net: Net, capsys):
        u = ["--node", net.url]
        search, status, zebra, nobody, get_nobody = [await run_main(capsys, *args) for args in (
            ["search", "holiday", *u], ["status", *u], ["search", "zebra", *u],
            ["providers", "ab" * 32, *u], ["get", "ab" * 32, *u, "-o", str(net.tmp / "x")],
        )]
        code, out, err = search
        assert code == 0, err
        assert HOLIDAY in out and "5.0 MiB" in out and net.holiday_id[:12] in out
        code, out, err = status
        assert code == 0 and net.nodes[3].info["node_id"] in out
        assert zebra[0] == 1 and nobody[0] == 1
        assert get_nobody[0] == 1 and "nobody provides" in get_nobody[2]


class TestNameResolution:
    async def test_zero_one_and_two_matches(self, net: Net, capsys):
        dest = net.tmp / "names"
        u = ["--node", net.url, "-o", str(dest)]
        # downloads run as processes (gRPC stays in one loop per process); the rest in-process
        one, exact = await asyncio.gather(
            run_cli("get", "holiday", *u, "--json"),  # 1: a single match is fetched
            run_cli("get", "report 2024.txt", *u),   # an exact name wins over other matches
        )
        none, wordless, two, two_json = [await run_main(capsys, *args) for args in (
            ["get", "zebra.png", *u],        # 0: nothing by that name
            ["get", "!!!", *u],              # no searchable word at all
            ["get", "report", *u],           # 2: both reports match
            ["get", "report", *u, "--json"],
        )]
        code, out, err = none
        assert code == 1 and "no file named 'zebra.png'" in err
        code, out, err = wordless
        assert code == 1 and "no file named '!!!'" in err

        code, out, err = one
        assert code == 0, err
        assert json.loads(out)["file_id"] == net.holiday_id
        assert (dest / HOLIDAY).read_bytes() == net.holiday  # noqa: ASYNC240

        code, out, err = two
        assert code == 1
        assert "report 2023.txt" in err and "report 2024.txt" in err and "FILE_ID" in err
        code, out, err = two_json
        assert code == 1 and len(json.loads(out)["candidates"]) == 2
        assert not (dest / "report 2023.txt").exists()  # noqa: ASYNC240

        code, out, err = exact
        assert code == 0, err
        assert (dest / "report 2024.txt").read_text().startswith("report number 2")  # noqa: ASYNC240

class TestRealProviders:
    async def test_library_resolves_and_downloads_from_two_real_providers(self, net: Net):
        async with Client(net.url) as client:
            assert (await client.resolve(HOLIDAY))["file_id"] == net.holiday_id
            with pytest.raises(NotFound):
                await client.resolve("zebra")
            result = await client.download(
                net.holiday_id, net.tmp / "multi",
                config=DownloadConfig(sources=2, run_bytes=1024 * 1024),
            )
        assert result.path.read_bytes() == net.holiday
        assert set(result.sources) == {net.grpc(1), net.grpc(2)}

    async def test_put_to_a_real_peer_then_it_is_shared(self, net: Net):
        src = net.tmp / "notes from the trip.txt"
        src.write_text("we saw a whale\n" * 1000)
        code, out, err = await run_cli("put", str(src), "--to", net.grpc(3))
        assert code == 1 and "token" in err  # uploads need the receiving node's token
        code, out, err = await run_cli("put", str(src), "--to", net.grpc(3), "--json",
                                       "--token", net.nodes[3].token)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["file_id"] == file_id_of_bytes(src.read_bytes())
        async with Client(net.url) as client:
            async def listed() -> bool:
                return any(f["file_id"] == doc["file_id"] for f in await client.files())
            assert await poll(listed)
        code, out, err = await run_cli("put", str(src), "--to", net.grpc(1))
        assert code == 1 and "does not accept uploads" in err

    async def test_kill_9_of_a_real_provider_mid_download(self, net: Net):
        """A third provider runs as a kadshare-node process; it is killed mid-download."""
        big = random.Random(9).randbytes(24 * 1024 * 1024)
        big_id = file_id_of_bytes(big)
        for i in (1, 2):
            (net.tmp / f"share{i}" / "big.bin").write_bytes(big)
        share = net.tmp / "share-proc"
        share.mkdir()
        (share / "big.bin").write_bytes(big)
        spec = NodeSpec(data=net.tmp / "data-proc", share=share,
                        bootstrap=[f"127.0.0.1:{net.nodes[0].info['dht_port']}"],
                        extra=("--log-level", "error"))
        proc = await AsyncNodeProcess.launch(spec, timeout=60)
        try:
            victim = proc.grpc_address
            async with Client(net.url) as client:
                async def three() -> bool:
                    return len(await client.providers(big_id)) >= 3
                assert await poll(three, tries=150)
                killed: list[int] = []

                def progress(p: DownloadProgress) -> None:
                    if not killed and p.done > 0:
                        proc.kill()
                        killed.append(p.done)

                result = await client.download(
                    big_id, net.tmp / "big", progress=progress,
                    providers=[victim, net.grpc(1), net.grpc(2)],
                    config=DownloadConfig(sources=3, run_bytes=1024 * 1024),
                )
        finally:
            await proc.reap()
        assert killed and killed[0] < len(big)
        assert result.path.read_bytes() == big
        assert victim in result.dropped
