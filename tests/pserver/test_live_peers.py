"""Issue 10, item 10: ``/peers`` and ``/status`` show who is there now.

A peer that stopped drops out within a liveness sweep or two; a peer restarted with
the same identity on another port is shown at its new address once the old one stops
answering (and not before: a stranger cannot redirect a live contact by claiming its id).
"""

from __future__ import annotations

import httpx

from tests.pserver.conftest import Peers, eventually, rest_url

SWEEP = 0.5  # seconds between liveness sweeps in these tests (production: 20)


async def peer_ports(http: httpx.AsyncClient, node) -> dict[str, int]:
    answer = await http.get(rest_url(node) + "/peers")
    return {p["node_id"]: p["dht_port"] for p in answer.json()["peers"]}


async def test_a_stopped_peer_leaves_peers_and_status(peers: Peers) -> None:
    a = await peers.start(liveness_interval=SWEEP)
    b = await peers.start(join=a, liveness_interval=SWEEP)
    c = await peers.start(join=a, liveness_interval=SWEEP)
    async with httpx.AsyncClient(timeout=10) as http:
        async def both_seen() -> bool:
            return set(await peer_ports(http, a)) == {b.info["node_id"], c.info["node_id"]}

        await eventually(both_seen)
        await c.stop(graceful=False)  # as a crash: it tells nobody

        async def only_b() -> bool:
            return set(await peer_ports(http, a)) == {b.info["node_id"]}

        await eventually(only_b)
        status = (await http.get(rest_url(a) + "/status")).json()
        assert status["peers"] == 1


async def test_a_restarted_peer_is_shown_at_its_new_address(peers: Peers) -> None:
    a = await peers.start(liveness_interval=SWEEP)
    base = peers.root / "mover"
    b = await peers.start(base=base, join=a, liveness_interval=SWEEP)
    b_id, old_port = b.info["node_id"], b.info["dht_port"]
    async with httpx.AsyncClient(timeout=10) as http:
        async def seen_at_old() -> bool:
            return (await peer_ports(http, a)).get(b_id) == old_port

        await eventually(seen_at_old)
        await b.stop(graceful=False)
        moved = await peers.start(base=base, join=a, liveness_interval=SWEEP)
        assert moved.info["node_id"] == b_id and moved.info["dht_port"] != old_port

        async def seen_at_new() -> bool:
            return (await peer_ports(http, a)).get(b_id) == moved.info["dht_port"]

        await eventually(seen_at_new)
