"""Five peers on five hosts (network namespaces): share, find, partition, heal, converge.

Loopback cannot show what a network cut does: here every peer is a real ``kadshare-node``
process with its own address, and a cut takes one host off the bridge. While it is cut,
lookups on the reachable side must still find their files (a dead contact costs a short
timeout, not a failed lookup); after healing, both sides must see what the other shared
during the cut, within a bounded time.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from kadcommon.merkle import file_id_of_bytes
from pserver.launch import NodeProcess, NodeSpec
from tests.multihost.netns import Host, Lab, wait_until

CONVERGE_SECONDS = 90.0
RNG = random.Random(77)


class Peer:
    """One ``kadshare-node`` running inside one lab host."""

    def __init__(self, lab: Lab, host: Host, root: Path, bootstrap: str | None) -> None:
        self.host = host
        self.share = root / f"h{host.index}" / "share"
        self.data = root / f"h{host.index}" / "data"
        self.share.mkdir(parents=True)
        self.data.mkdir(parents=True)
        self.spec = NodeSpec(
            data=self.data, share=self.share, host=host.addr, rest_host=host.addr,
            bootstrap=[bootstrap] if bootstrap else [], prefix=lab.prefix(host),
            new_session=True, name=f"peer on h{host.index}",
        )
        self.lab = lab
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        base = self.data.parent
        node = NodeProcess.launch(self.spec, stdout=base / "stdout.log",
                                  stderr=base / "stderr.log", timeout=90)
        self.lab.adopt(node.process)
        self.info = node.info

    @property
    def url(self) -> str:
        return f"http://{self.host.addr}:{self.info['rest_port']}"

    @property
    def dht(self) -> str:
        return f"{self.host.addr}:{self.info['dht_port']}"

    def get(self, path: str, **params: str) -> tuple[int, Any]:
        """REST GET issued from inside this peer's namespace."""

        def call() -> tuple[int, Any]:
            try:
                reply = httpx.get(self.url + path, params=params, timeout=45.0)
            except httpx.HTTPError as exc:
                return 0, str(exc)
            return reply.status_code, reply.json()

        return self.host.run_in(call, timeout=60.0)

    def provider_ids(self, file_id: str) -> set[str]:
        status, body = self.get(f"/providers/{file_id}")
        if status != 200:
            return set()
        return {p["node_id"] for p in body["providers"]}

    def search_ids(self, words: str) -> set[str]:
        status, body = self.get("/search", q=words)
        if status != 200:
            return set()
        return {hit["file_id"] for hit in body["results"]}


def _share(peer: Peer, name: str) -> str:
    content = RNG.randbytes(4096 + peer.host.index)
    (peer.share / name).write_bytes(content)
    return file_id_of_bytes(content)


@pytest.fixture
def peers(lab: Lab, tmp_path: Path) -> list[Peer]:
    first = Peer(lab, lab.hosts[0], tmp_path, bootstrap=None)
    files = {}
    files[0] = _share(first, "ledger host1.txt")
    first.start()
    out = [first]
    for host in lab.hosts[1:]:
        peer = Peer(lab, host, tmp_path, bootstrap=first.dht)
        files[host.index - 1] = _share(peer, f"ledger host{host.index}.txt")
        peer.start()
        out.append(peer)
    for i, peer in enumerate(out):
        peer.file_id = files[i]  # type: ignore[attr-defined]
    return out


class TestPartition:
    def test_find_across_hosts_cut_one_heal_converge(self, lab: Lab, peers: list[Peer]) -> None:
        ids = [p.file_id for p in peers]  # type: ignore[attr-defined]
        owners = [p.info["node_id"] for p in peers]

        # 1. every host finds every other host's file, by keyword and by id
        for peer in peers:
            found = wait_until(lambda p=peer: set(ids) <= p.search_ids("ledger"),
                               timeout=CONVERGE_SECONDS)
            assert found, f"host {peer.host.index} did not find all 5 files by keyword"
        rotated = zip(ids[1:] + ids[:1], owners[1:] + owners[:1], strict=True)
        for peer, (fid, owner) in zip(peers, rotated, strict=True):
            assert wait_until(lambda p=peer, f=fid, o=owner: o in p.provider_ids(f),
                              timeout=CONVERGE_SECONDS)
        status, peers_body = peers[0].get("/peers")
        assert status == 200
        hosts_seen = {p["host"] for p in peers_body["peers"]}
        assert {p.host.addr for p in peers[1:]} <= hosts_seen, peers_body

        # 2. cut host 5 off; the reachable side still finds its own files
        cut = peers[4]
        lab.cut(cut.host)
        for peer, fid, owner in zip(peers[:4], ids[1:4] + ids[:1], owners[1:4] + owners[:1],
                                    strict=True):
            assert wait_until(lambda p=peer, f=fid, o=owner: o in p.provider_ids(f),
                              timeout=CONVERGE_SECONDS), f"host {peer.host.index} lost {fid[:8]}"
        # both sides share something new while cut
        fresh_inside = _share(peers[1], "ledger during cut inside.txt")
        fresh_outside = _share(cut, "ledger during cut outside.txt")
        assert wait_until(lambda: fresh_inside in peers[0].search_ids("ledger cut"),
                          timeout=CONVERGE_SECONDS), "reachable side missed a new file"

        # 3. heal: within a bounded time each side finds what the other shared during the cut
        lab.heal(cut.host)
        assert wait_until(lambda: fresh_inside in cut.search_ids("ledger cut"),
                          timeout=CONVERGE_SECONDS), \
            f"healed host never found the new file; its peers: {cut.get('/peers')}"
        assert wait_until(
            lambda: owners[4] in peers[2].provider_ids(fresh_outside),
            timeout=CONVERGE_SECONDS,
        ), "file shared by the cut host during the cut never reached the others"
        for peer in peers:
            assert wait_until(lambda p=peer: set(ids) <= p.search_ids("ledger"),
                              timeout=CONVERGE_SECONDS)
