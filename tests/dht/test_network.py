"""Multi-node behaviour on real loopback UDP: providers, search, withdraw, churn, TTL."""

from __future__ import annotations

import asyncio
import random

from dht import DhtConfig, DhtNode, Identity
from dht.keys import file_key, keyword_key
from dht.keywords import normalize_words
from dht.records import encode_record, make_keyword, make_provider
from tests.dht.netutil import eventually, file_id_of, start_network, stop_all

FILES = {
    "Été à la Plage.jpg": file_id_of("plage"),
    "Holiday Photos 2024.zip": file_id_of("holiday"),
    "holiday_video.MP4": file_id_of("video"),
    "Quarterly Report.pdf": file_id_of("report"),
}


class TestFiftyNodes:
    async def test_ten_providers_and_keyword_search_from_every_node(self) -> None:
        nodes = await start_network(50)
        try:
            rng = random.Random(3)
            target = file_id_of("popular")
            providers = rng.sample(nodes, 10)
            for i, node in enumerate(providers):
                grpc = f"127.0.0.1:{7000 + i}"
                await node.announce(target, "Popular Song.mp3", 4096, grpc=grpc)
            owners = rng.sample(nodes, len(FILES))
            for (name, fid), node in zip(FILES.items(), owners, strict=True):
                await node.announce(fid, name, 100, grpc="127.0.0.1:6000")
            want = {n.node_id for n in providers}
            for node in nodes:
                found = await node.find_providers(target)
                assert {p.node_id for p in found} == want, f"{node} saw {len(found)} of 10"
                assert {p.grpc for p in found} == {f"127.0.0.1:{7000 + i}" for i in range(10)}
            queries = {
                "holiday": {FILES["Holiday Photos 2024.zip"], FILES["holiday_video.MP4"]},
                "HOLIDAY photos": {FILES["Holiday Photos 2024.zip"]},
                "ete plage": {FILES["Été à la Plage.jpg"]},
                "ÉTÉ": {FILES["Été à la Plage.jpg"]},
                "report quarterly": {FILES["Quarterly Report.pdf"]},
                "holiday report": set(),
                "popular song": {target},
                "nothing-matches-this": set(),
            }
            for node in rng.sample(nodes, 8):
                for query, expected in queries.items():
                    hits = await node.search(query)
                    assert {h.file_id for h in hits} == expected, (query, hits)
            hit = (await nodes[0].search("popular"))[0]
            assert (hit.name, hit.size, hit.providers) == ("Popular Song.mp3", 4096, 10)
        finally:
            stop_all(nodes)

    async def test_withdraw_and_leave_remove_records_network_wide(self) -> None:
        nodes = await start_network(50)
        try:
            fid = file_id_of("to be withdrawn")
            a, b, c = nodes[10], nodes[20], nodes[30]
            for node in (a, b, c):
                await node.announce(fid, "Withdrawn Thing.txt", 5, grpc="127.0.0.1:1")
            assert len(await nodes[40].find_providers(fid)) == 3
            await a.withdraw(fid)
            assert a.announced_file_ids() == set()
            await b.leave()
            readers = [n for n in nodes if n not in (a, b)]
            for reader in readers[::4]:
                found = await reader.find_providers(fid)
                assert [p.node_id for p in found] == [c.node_id], reader
                hits = await reader.search("withdrawn thing")
                assert [h.providers for h in hits] == [1]
            await c.withdraw(fid)
            assert await nodes[45].find_providers(fid) == []
            assert await nodes[45].search("withdrawn") == []
        finally:
            stop_all(nodes)

    async def test_after_thirty_percent_crash_every_live_provider_is_found(self) -> None:
        nodes = await start_network(50)
        try:
            rng = random.Random(11)
            files = {}
            for i in range(30):
                owner = rng.choice(nodes)
                fid = file_id_of(f"churn file {i}")
                await owner.announce(fid, f"churn file {i}.dat", i, grpc="127.0.0.1:2")
                files[fid] = owner
            dead = set(rng.sample(range(50), 15))
            for i in dead:
                nodes[i].stop()
            alive = [n for i, n in enumerate(nodes) if i not in dead]
            for fid, owner in files.items():
                if owner in alive:
                    reader = rng.choice(alive)
                    found = await reader.find_providers(fid)
                    assert owner.node_id in {p.node_id for p in found}, (fid, reader)
        finally:
            stop_all(nodes)


class TestLifetime:
    async def test_record_expires_after_ttl_unless_republished(self) -> None:
        cfg = DhtConfig.for_tests(record_ttl=4, republish_interval=1.0, expire_interval=0.5)
        nodes = await start_network(12, cfg)
        try:
            kept, lost = file_id_of("kept"), file_id_of("lost")
            await nodes[3].announce(kept, "kept.txt", 1, grpc="127.0.0.1:3")
            await nodes[4].announce(lost, "lost.txt", 1, grpc="127.0.0.1:4")
            assert len(await nodes[8].find_providers(lost)) == 1
            nodes[4].stop()  # a crash: nobody republishes "lost" any more

            async def gone() -> bool:
                return await nodes[9].find_providers(lost) == []

            assert await eventually(gone, attempts=40, pause=0.5)
            # "kept" outlived several TTLs because its owner republished it
            assert len(await nodes[9].find_providers(kept)) == 1
            assert [h.file_id for h in await nodes[10].search("kept")] == [kept]
        finally:
            stop_all(nodes)

    async def test_closer_newcomer_receives_records_by_handoff(self) -> None:
        nodes = await start_network(16)
        newcomer: DhtNode | None = None
        try:
            fid = file_id_of("handoff")
            await nodes[5].announce(fid, "handoff.bin", 1, grpc="127.0.0.1:5")
            key = int.from_bytes(file_key(fid), "big")
            # an identity closer to the key than anyone else (first 10 bits shared)
            best = min((Identity.generate() for _ in range(3000)),
                       key=lambda i: int.from_bytes(i.node_id, "big") ^ key)
            newcomer = DhtNode(identity=best, config=DhtConfig.for_tests())
            await newcomer.listen(0)
            await newcomer.bootstrap([("127.0.0.1", nodes[0].port)])

            async def handed() -> bool:
                return newcomer is not None and newcomer.stored_record_count() >= 1

            assert await eventually(handed, attempts=40, pause=0.25)
            assert [p.node_id for p in await newcomer.find_providers(fid)] == [nodes[5].node_id]
        finally:
            stop_all(nodes)
            if newcomer is not None:
                newcomer.stop()


class TestFlood:
    async def test_store_flood_from_one_owner_stays_within_caps(self) -> None:
        cfg = DhtConfig.for_tests(max_records_per_owner=40, max_keyword_entries_per_owner=8)
        nodes = await start_network(8, cfg)
        try:
            honest = file_id_of("honest")
            await nodes[1].announce(honest, "music honest.mp3", 1, grpc="127.0.0.1:9")
            victim = nodes[2]
            spammer = Identity.generate()
            proto = nodes[7].protocol
            peer = next(p for p in proto.router.all_contacts() if p.port == victim.port)
            word_key = None
            for i in range(150):
                fid = file_id_of(f"spam {i}")
                rec = make_provider(spammer, fid, "spam", 1, "127.0.0.1:6", 30)
                await proto.call_store_records(peer, file_key(fid), [encode_record(rec)])
                kw = make_keyword(spammer, "music", fid, "music spam", 1, 30)
                word_key = keyword_key("music")
                await proto.call_store_records(peer, word_key, [encode_record(kw)])
            assert victim.store.owner_count(spammer.node_id_hex) <= 40
            entries = victim.store.records(word_key)
            assert sum(1 for r, _ in entries if r.node_id == spammer.node_id_hex) <= 8
            hits = await nodes[5].search("music")
            assert honest in {h.file_id for h in hits}
            assert normalize_words("music honest.mp3")[0] == "music"
            await asyncio.sleep(0)
        finally:
            stop_all(nodes)


class TestPaging:
    async def test_a_key_with_more_records_than_one_datagram_is_read_in_pages(self) -> None:
        nodes = await start_network(3)
        try:
            fid = file_id_of("very popular")
            holder = nodes[1]
            owners = [Identity.generate() for _ in range(70)]
            for i, ident in enumerate(owners):
                rec = make_provider(ident, fid, "Very Popular File.iso", 1, f"10.0.0.{i}:9000", 30)
                holder.store.put(file_key(fid), rec)
            assert len(holder.store.records(file_key(fid))) == 70  # ~14 KB > 8 KB datagram
            found = await nodes[2].find_providers(fid)
            assert {p.node_id for p in found} == {o.node_id_hex for o in owners}
        finally:
            stop_all(nodes)


class TestWithdrawRace:
    async def test_a_republish_racing_a_withdraw_does_not_resurrect_the_file(self) -> None:
        nodes = await start_network(6)
        try:
            fid = file_id_of("race")
            owner = nodes[2]
            await owner.announce(fid, "race.bin", 1, grpc="127.0.0.1:1")
            republish = asyncio.ensure_future(owner.republish())
            await asyncio.sleep(0)  # the republish has taken its list of files
            await owner.withdraw(fid)
            await republish
            for reader in nodes:
                assert await reader.find_providers(fid) == [], reader
        finally:
            stop_all(nodes)


class TestBigFolder:
    async def test_every_file_of_a_large_folder_is_found_by_its_own_words(self) -> None:
        """40 files sharing two words from one peer, the keyword cap set to 8: a search
        with a distinguishing word still finds its file (through that word's key),
        which a plain intersection of per-word answers did not."""
        cfg = DhtConfig.for_tests(max_keyword_entries_per_owner=8)
        nodes = await start_network(6, cfg)
        try:
            ids = {i: file_id_of(f"holiday photo {i}") for i in range(40)}
            for i, fid in ids.items():
                await nodes[1].announce(fid, f"Holiday Photo {i:03d}.jpg", 10, grpc="127.0.0.1:3")
            for i in (0, 17, 33, 39):
                hits = await nodes[4].search(f"holiday photo {i:03d}")
                assert [h.file_id for h in hits] == [ids[i]], (i, hits)
            common = await nodes[4].search("holiday photo")
            assert 8 <= len(common) <= 40
        finally:
            stop_all(nodes)


class TestStarvedTable:
    async def test_missed_replies_do_not_empty_the_routing_table(self) -> None:
        """Every peer misses a lookup's replies (as when the process is CPU-starved):
        the table keeps them, suspected, instead of dropping all on the first miss, and
        a lookup works again once they answer."""
        nodes = await start_network(6)
        reader = nodes[0]
        try:
            before = len(reader.contacts())
            assert before >= 3
            others = [n.protocol.transport for n in nodes[1:]]
            for transport in others:
                transport.pause_reading()  # alive but deaf, like a starved loop
            assert await reader.find_providers(file_id_of("missing")) == []
            assert len(reader.contacts()) == before
            for transport in others:
                transport.resume_reading()
            fid = file_id_of("after the stall")
            await nodes[3].announce(fid, "after the stall.txt", 1, grpc="127.0.0.1:4")
            assert [p.node_id for p in await reader.find_providers(fid)] == [nodes[3].node_id]
        finally:
            stop_all(nodes)
