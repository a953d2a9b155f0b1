"""End to end: five real ``kadshare-node`` processes on loopback, driven like a user would.

One file is shared by two peers, another by a third; a peer that shares nothing finds
both providers by keyword and downloads with the ``kadshare`` CLI. The tests run in
file order on one network: the last ones kill and stop peers.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kadcommon.merkle import file_id_of_bytes
from pserver.launch import console_script
from simulations.localnet import LocalNetwork, Peer

RNG = random.Random(20261122)
SHARED_TWICE = ("Holiday Photos Beach.jpg", RNG.randbytes(2 * 1024 * 1024 + 17))
SHARED_ONCE = ("Quarterly report 2026.pdf", RNG.randbytes(300 * 1024))
TWICE_ID = file_id_of_bytes(SHARED_TWICE[1])
ONCE_ID = file_id_of_bytes(SHARED_ONCE[1])
POLL_SECONDS = 45.0


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Peer]]:
    root = tmp_path_factory.mktemp("net")
    net = LocalNetwork(root)
    try:
        net.start([dict([SHARED_TWICE]), dict([SHARED_TWICE]), dict([SHARED_ONCE]), {}, {}])
        yield net.peers
    finally:
        net.stop()


def rest(peer: Peer, path: str, **params: str) -> httpx.Response:
    return httpx.get(peer.rest_url + path, params=params, timeout=10.0)


def poll_search(peer: Peer, query: str, file_id: str, providers: int) -> dict:
    """Search from ``peer`` until ``file_id`` shows ``providers`` providers (bounded)."""
    deadline = time.monotonic() + POLL_SECONDS
    last: dict = {}
    while time.monotonic() < deadline:
        reply = rest(peer, "/search", q=query)
        assert reply.status_code == 200, reply.text
        last = reply.json()
        for hit in last["results"]:
            if hit["file_id"] == file_id and hit["providers"] >= providers:
                return hit
        time.sleep(0.5)
    raise AssertionError(f"{file_id[:8]} not found with {providers} providers: {last}")


def kadshare(peer: Peer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("kadshare"), "--node", peer.rest_url, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_each_peer_prints_its_json_line_and_writes_node_json(network: list[Peer]) -> None:
    for peer in network:
        assert set(peer.info) == {"node_id", "host", "dht_port", "grpc_port", "rest_port",
                                  "transfers", "network"}
        assert json.loads((peer.data / "node.json").read_text()) == peer.info
        status = rest(peer, "/status").json()
        assert status["node_id"] == peer.node_id
        assert status["rest_port"] == peer.info["rest_port"]
    assert len({peer.node_id for peer in network}) == len(network)


def test_keyword_search_from_a_third_peer_lists_both_providers(network: list[Peer]) -> None:
    hit = poll_search(network[3], "holiday photos", TWICE_ID, providers=2)
    assert hit["name"] == SHARED_TWICE[0]
    assert hit["size"] == len(SHARED_TWICE[1])
    providers = rest(network[3], f"/providers/{TWICE_ID}").json()["providers"]
    assert {p["node_id"] for p in providers} == {network[0].node_id, network[1].node_id}
    assert {p["grpc"] for p in providers} == {network[0].grpc_address, network[1].grpc_address}


def test_search_matches_words_regardless_of_case(network: list[Peer]) -> None:
    hit = poll_search(network[4], "QUARTERLY Report", ONCE_ID, providers=1)
    assert hit["name"] == SHARED_ONCE[0]


def test_cli_get_downloads_and_verifies(network: list[Peer], tmp_path: Path) -> None:
    poll_search(network[3], "holiday photos", TWICE_ID, providers=2)
    done = kadshare(network[3], "get", TWICE_ID, "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    fetched = tmp_path / SHARED_TWICE[0]
    assert file_id_of_bytes(fetched.read_bytes()) == TWICE_ID
    assert [p.name for p in tmp_path.iterdir()] == [SHARED_TWICE[0]]


def test_cli_get_of_unknown_file_exits_1(network: list[Peer], tmp_path: Path) -> None:
    done = kadshare(network[3], "get", "ab" * 32, "-o", str(tmp_path))
    assert done.returncode == 1
    assert not list(tmp_path.iterdir())


def test_download_survives_sigkill_of_one_provider(network: list[Peer], tmp_path: Path) -> None:
    poll_search(network[4], "holiday photos", TWICE_ID, providers=2)
    network[0].kill()
    done = kadshare(network[4], "get", TWICE_ID, "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    fetched = tmp_path / SHARED_TWICE[0]
    assert file_id_of_bytes(fetched.read_bytes()) == TWICE_ID


def test_sigterm_withdraws_records_and_exits_0(network: list[Peer]) -> None:
    leaving = network[2]
    assert leaving.stop() == 0
    deadline = time.monotonic() + POLL_SECONDS
    providers: list = [None]
    while providers and time.monotonic() < deadline:
        providers = rest(network[3], f"/providers/{ONCE_ID}").json()["providers"]
        time.sleep(0.5)
    assert providers == []
