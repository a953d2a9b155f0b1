"""Short file ids: the 12 characters the tables print are accepted like git accepts an
abbreviated commit, in ``providers``, ``get`` and REST ``/providers/{id}``.

Two files whose ids share their first 8 hex characters make a prefix ambiguous; the
answer must list full ids a person can paste.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kadcommon.merkle import file_id_of_bytes
from pclient import Client
from tests.pclient.cli_runner import run_cli, run_main
from tests.pclient.netutil import Net, start_net, until


def twins() -> tuple[bytes, bytes]:
    """Two small contents whose SHA-256 share the first 8 hex characters (found in ~0.1 s)."""
    seen: dict[str, bytes] = {}
    for i in range(2_000_000):
        data = b"twin %d\n" % i
        head = file_id_of_bytes(data)[:8]
        if head in seen:
            return seen[head], data
        seen[head] = data
    raise AssertionError("no 32-bit prefix collision found")


def sha(data: bytes) -> str:
    return file_id_of_bytes(data)


@pytest.fixture
async def twin_net(tmp_path: Path) -> AsyncIterator[tuple[Net, bytes, bytes]]:
    a, b = twins()
    net = await start_net(tmp_path, [{"twin a.txt": a}, {"twin b.txt": b}])
    try:
        async with Client(net.url, timeout=30) as client:
            async def both() -> bool:
                return len(await client.search("twin")) == 2
            await until(both, "both twins searchable")
        yield net, a, b
    finally:
        await net.stop()


class TestPrefixesOnTheNetwork:
    async def test_the_printed_12_characters_work_in_providers_and_get(self, twin_net, capsys):
        net, a, b = twin_net
        u = ["--node", net.url]
        code, out, err = await run_main(capsys, "search", "twin", *u)
        assert code == 0 and sha(a)[:12] in out and sha(b)[:12] in out
        code, out, err = await run_main(capsys, "providers", sha(a)[:12], *u, "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["file_id"] == sha(a) and [p["grpc"] for p in doc["providers"]] == [net.grpc(0)]
        code, out, err = await run_cli("get", sha(b)[:12].upper(), *u, "-o",
                                       str(net.tmp / "dl"), "--json")
        assert code == 0, err
        assert (net.tmp / "dl" / "twin b.txt").read_bytes() == b  # noqa: ASYNC240
        # with --from, the node expands the prefix and the bytes come from the named peer
        code, out, err = await run_cli("get", sha(a)[:10], "--from", net.grpc(0), *u, "-o",
                                       str(net.tmp / "dl2"), "--json")
        assert code == 0, err
        assert json.loads(out)["file_id"] == sha(a)

    async def test_an_ambiguous_prefix_lists_pasteable_ids_and_exits_1(self, twin_net, capsys):
        net, a, b = twin_net
        u = ["--node", net.url]
        await run_main(capsys, "search", "twin", *u)
        prefix = sha(a)[:8]
        for command in (["providers", prefix], ["get", prefix, "-o", str(net.tmp / "x")]):
            code, out, err = await run_main(capsys, *command, *u)
            assert code == 1
            lines = err.strip().splitlines()
            assert "2 files" in lines[0]
            assert [ln.split()[0] for ln in lines[1:]] == sorted([sha(a), sha(b)])
            assert "twin a.txt" in err and "Traceback" not in err
        code, out, err = await run_main(capsys, "providers", prefix, *u, "--json")
        assert code == 1
        assert {c["file_id"] for c in json.loads(out)["candidates"]} == {sha(a), sha(b)}
        assert not (net.tmp / "x").exists()  # noqa: ASYNC240

    async def test_rest_expands_prefixes_and_answers_409_with_candidates(self, twin_net):
        net, a, b = twin_net
        async with httpx.AsyncClient(base_url=net.url, timeout=30) as http:
            # peer 0's own file is known to peer 0 without any search
            own = await http.get(f"{net.rest(0)}/providers/{sha(a)[:8]}")
            assert own.status_code == 200 and own.json()["file_id"] == sha(a)
            # peer 0 has not seen peer 1's file yet (the client's peer has: it searched)
            unknown = await http.get(f"{net.rest(0)}/providers/{sha(b)[:12]}")
            assert unknown.status_code == 404 and "search" in unknown.json()["error"]
            one = await http.get(f"/providers/{sha(b)[:12]}")
            assert one.status_code == 200 and one.json()["file_id"] == sha(b)
            both = await http.get(f"/providers/{sha(a)[:8]}")
            assert both.status_code == 409
            assert sorted(c["file_id"] for c in both.json()["candidates"]) == sorted(
                [sha(a), sha(b)])
            assert {c["name"] for c in both.json()["candidates"]} == {"twin a.txt", "twin b.txt"}
            short = await http.get(f"/providers/{sha(a)[:7]}")
            assert short.status_code == 400 and "at least 8" in short.json()["error"]

    async def test_unknown_prefix_exits_1_saying_how_to_find_the_id(self, twin_net, capsys):
        net, a, b = twin_net
        code, out, err = await run_main(capsys, "providers", "0123456789ab", "--node", net.url)
        assert code == 1 and "0123456789ab" in err and "search" in err
        code, out, err = await run_main(capsys, "providers", "0123456", "--node", net.url)
        assert code == 2 and "at least 8" in err
