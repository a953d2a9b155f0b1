"""What ``search`` tells a person: how many peers provide each file, and whether an
empty answer means "no such file" or "nobody answered"."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.pclient.cli_runner import run_main
from tests.pclient.netutil import COPY, PLAGE, start_net


class TestProviderCount:
    async def test_every_provider_counts_whatever_name_matched(self, photo_net, capsys):
        net: Any = photo_net
        async with httpx.AsyncClient(base_url=net.url, timeout=30) as http:
            for words in ("plage", "nice beach", "nice"):
                doc = (await http.get("/search", params={"q": words})).json()
                hits = [h for h in doc["results"] if h["file_id"] == net.photo_id]
                assert len(hits) == 1, doc
                assert hits[0]["providers"] == 3, (words, hits)
        code, out, err = await run_main(capsys, "search", "plage", "--node", net.url)
        assert code == 0, err
        row = next(line for line in out.splitlines() if PLAGE in line)
        assert row.split()[-1] == "3"
        code, out, err = await run_main(capsys, "search", "copy", "--node", net.url, "--json")
        assert code == 0, err
        assert json.loads(out)["results"] == [{"file_id": net.photo_id, "name": COPY,
                                               "size": len(net.photo), "providers": 3}]


class TestNoMatchesVersusNoAnswer:
    async def test_frozen_network_is_not_reported_as_no_matches(self, photo_net, capsys):
        net: Any = photo_net
        u = ["--node", net.url]
        # peers answer, nothing matches: 200 with no results, "no matches", exit 1
        async with httpx.AsyncClient(base_url=net.url, timeout=60) as http:
            reply = await http.get("/search", params={"q": "zebra"})
            assert reply.status_code == 200 and reply.json()["results"] == []
        code, out, err = await run_main(capsys, "search", "zebra", *u)
        assert code == 1 and "no matches" in out and "answer" not in err

        for node in net.nodes[:-1]:  # every other peer stops answering
            await node.stop(graceful=False)
        async with httpx.AsyncClient(base_url=net.url, timeout=60) as http:
            # (the photo's provider records may be held by this very peer: an id nobody has)
            for path, params in (("/search", {"q": "zebra"}), ("/providers/" + "ab" * 32, None)):
                reply = await http.get(path, params=params)
                assert reply.status_code == 503, reply.text
                assert "answered" in reply.json()["error"]
        code, out, err = await run_main(capsys, "search", "zebra", *u)
        assert code == 1 and "no matches" not in out
        assert "no answer from the network" in err and "Traceback" not in err
        code, out, err = await run_main(capsys, "search", "zebra", *u, "--json")
        assert code == 1 and "no answer" in json.loads(out)["error"]
        code, out, err = await run_main(capsys, "get", "ab" * 32, *u, "-o", str(net.tmp / "x"))
        assert code == 1 and "no answer from the network" in err

    async def test_a_node_without_peers_says_so(self, tmp_path, capsys):
        net = await start_net(tmp_path, [])
        try:
            code, out, err = await run_main(capsys, "search", "zebra", "--node", net.url)
        finally:
            await net.stop()
        assert code == 1 and "no matches" not in out
        assert "knows no other peer" in err and "--bootstrap" in err
