"""What ``search`` tells a person: how many peers provide each file, and whether an
empty answer means "no such file" or "nobody answered"."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.pclient.cli_runner import run_main
from tests.pclient.netutil import COPY, PLAGE


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
