"""Share links end to end: a node that never joined fetches a file from a pasted link."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx

from kadcommon.link import parse_link
from kadcommon.merkle import file_id_of_bytes
from pserver.config import NodeConfig
from pserver.node import Node
from tests.pclient.cli_runner import run_cli
from tests.pclient.netutil import start_net

NAME = "été notes.bin"


async def test_link_from_a_node_fetched_by_a_fresh_unjoined_node(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(2 * 1024 * 1024 + 99)
    (tmp_path / "ls").mkdir()
    lone = await Node.start(NodeConfig(data_dir=tmp_path / "lone", share_dir=tmp_path / "ls"))
    lone_url = f"http://127.0.0.1:{lone.info['rest_port']}"
    try:
        net = await start_net(tmp_path, [{NAME: data}])
    except BaseException:
        await lone.stop(graceful=False)
        raise
    try:
        code, out, err = await run_cli("link", NAME, "--node", net.rest(0), timeout=120)
        assert code == 0, err
        text = out.strip()
        link = parse_link(text)
        assert (link.file_id, link.name, link.size) == (file_id_of_bytes(data), NAME, len(data))
        assert link.peers == (("127.0.0.1", net.nodes[0].info["dht_port"]),)
        # the same link from the local path, hashed by the client
        code, out, err = await run_cli("link", str(tmp_path / "share0" / NAME), "--node",
                                       net.rest(0), timeout=120)
        assert code == 0 and out.strip() == text, err

        assert lone.status()["peers"] == 0  # never joined, never saw the file
        code, out, err = await run_cli("get", text, "--node", lone_url, "-o",
                                       str(tmp_path / "dl") + "/", "--json", "--timeout", "10",
                                       timeout=120)
        assert code == 0, err
        assert (tmp_path / "dl" / NAME).read_bytes() == data
        assert json.loads(out)["name"] == NAME

        async with httpx.AsyncClient(base_url=lone_url, timeout=30) as rest:
            resp = await rest.get("/providers", params={"link": text})
            assert resp.status_code == 200, resp.text
            assert resp.json()["file_id"] == link.file_id and resp.json()["providers"]
            resp = await rest.get("/providers", params={"link": text.replace("size=", "size=x")})
            assert resp.status_code == 400 and "size" in resp.json()["error"]
            resp = await rest.post("/bootstrap", json={"peers": ["nothost"]})
            assert resp.status_code == 400 and "peer" in resp.json()["error"]
            resp = await rest.post("/bootstrap", json={"link": text},
                                   headers={"origin": "http://evil.example"})
            assert resp.status_code == 403
    finally:
        await lone.stop(graceful=False)
        await net.stop()


async def test_malformed_link_is_a_usage_error(tmp_path: Path) -> None:
    code, _out, err = await run_cli("get", "kadshare:file?id=12&name=x&size=1&peer=h:1",
                                    "--node", "127.0.0.1:9", timeout=60)
    assert code == 2 and "link id" in err
