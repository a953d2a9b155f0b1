"""First multi-node behaviour of the public API: providers and keyword search."""

from __future__ import annotations

import pytest

from dht import DhtConfig, DhtNode, InvalidRecord, SearchHit
from tests.dht.netutil import file_id_of, start_network, stop_all


class TestLoneNode:
    async def test_lone_node_answers_from_its_own_store(self) -> None:
        node = DhtNode(config=DhtConfig.for_tests())
        await node.listen(0)
        try:
            assert await node.bootstrap([]) == 0
            fid = file_id_of("alone")
            await node.announce(fid, "Lonely Song.mp3", 42, grpc="127.0.0.1:7000")
            providers = await node.find_providers(fid)
            assert [p.grpc for p in providers] == ["127.0.0.1:7000"]
            assert providers[0].node_id == node.node_id
            hits = await node.search("lonely song")
            assert hits == [SearchHit(file_id=fid, name="Lonely Song.mp3", size=42, providers=1)]
            assert node.stored_record_count() >= 1
            assert node.announced_file_ids() == {fid}
        finally:
            node.stop()

    @pytest.mark.parametrize("bad", ["", "abc", "A" * 64, "g" * 64, "a" * 63, 123, None])
    async def test_bad_file_id_is_a_clear_error(self, bad: object) -> None:
        node = DhtNode(config=DhtConfig.for_tests())
        await node.listen(0)
        try:
            with pytest.raises(InvalidRecord, match="64 lowercase hex"):
                await node.announce(bad, "x.txt", 1, grpc="127.0.0.1:1")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="64 lowercase hex"):
                await node.find_providers(bad)  # type: ignore[arg-type]
        finally:
            node.stop()


class TestSmallNetwork:
    async def test_ten_nodes_three_providers_found_from_every_node(self) -> None:
        nodes = await start_network(10)
        try:
            fid = file_id_of("shared file")
            providers = nodes[2], nodes[5], nodes[8]
            for i, node in enumerate(providers):
                grpc = f"127.0.0.1:{9000 + i}"
                await node.announce(fid, "Holiday Photos 2024.zip", 1000, grpc=grpc)
            expected = {n.node_id for n in providers}
            for node in nodes:
                found = await node.find_providers(fid)
                assert {p.node_id for p in found} == expected, node
            for node in nodes:
                hits = await node.search("holiday photos")
                assert [(h.file_id, h.providers) for h in hits] == [(fid, 3)]
        finally:
            stop_all(nodes)
