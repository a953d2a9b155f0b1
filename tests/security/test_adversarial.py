"""A malicious participant against a real DHT (6 nodes, real UDP on loopback).

The attacker is a ``Stranger``: a bare UDP socket with a valid Ed25519 identity of its
own, speaking the wire format by hand. Every claim here is checked at every storing node
(by sending to each one) and from the user's side (a lookup from an honest node).
The dht owner's unit tests (``tests/dht``) check each rule of the store in isolation.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from kademlia.node import Node

from dht.admission import make_proof
from dht.config import DhtConfig
from dht.identity import Identity
from dht.keys import file_key, keyword_key
from dht.node import DhtNode
from dht.records import (
    ProviderRecord,
    encode_record,
    make_keyword,
    make_provider,
    make_withdrawal,
    signed_message,
)
from dht.transport import REQUEST, RESPONSE, encode_datagram
from tests.security.stranger import Stranger, raw_request

N_NODES = 6
CONFIG = DhtConfig.for_tests(record_ttl=300)


def fid(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


async def announced(node: DhtNode, name: str, size: int, grpc: str) -> str:
    """Announce a file called ``name`` from ``node``; return its (made-up) file id."""
    file_id = fid(name)
    await node.announce(file_id, name, size, grpc=grpc)
    return file_id


async def wait_for(pred, timeout: float = 20.0, interval: float = 0.1):  # noqa: ANN001
    """Poll an async predicate, bounded in time and tries."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        value = await pred()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)
    return await pred()


@pytest.fixture
async def nodes() -> AsyncIterator[list[DhtNode]]:
    started: list[DhtNode] = []
    try:
        for i in range(N_NODES):
            node = DhtNode(config=CONFIG)
            await node.listen(port=0, interface="127.0.0.1")
            if i:
                await node.bootstrap([("127.0.0.1", started[0].port)])
            started.append(node)
        for node in started:  # everyone knows everyone (6 < k): every node stores every key
            await node.bootstrap([("127.0.0.1", started[0].port)])
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.fixture
async def stranger() -> AsyncIterator[Stranger]:
    s = await Stranger.open()
    try:
        yield s
    finally:
        s.close()


async def store_everywhere(s: Stranger, nodes: list[DhtNode], key: bytes,
                           records: list[bytes]) -> list[tuple[int, int]]:
    """Send one store request per node; return (stored, refused) per node."""
    me = os.urandom(20)
    out = []
    for node in nodes:
        reply = await s.request(("127.0.0.1", node.port), "store", [me, key, records])
        assert reply is not None and reply[0] == 1, f"no answer from {node}: {reply}"
        out.append((reply[1]["stored"], reply[1]["refused"]))
    return out


async def stored(s: Stranger, node: DhtNode, sender: bytes, key: bytes, rec: bytes) -> bool:
    """Whether ``node`` answers one store of ``rec`` from ``s`` (not dropped by a limit)."""
    reply = await s.request(("127.0.0.1", node.port), "store", [sender, key, [rec]])
    return reply is not None and reply[0] == 1


def forge(rec: ProviderRecord, **changes: object) -> bytes:
    """The record with fields changed and the original signature kept."""
    return encode_record(replace(rec, **changes))


class TestRecordRejection:
    async def test_forged_tampered_wrong_owner_oversize_future_rejected(
        self, nodes: list[DhtNode], stranger: Stranger
    ) -> None:
        owner, reader = nodes[1], nodes[5]
        file_id = await announced(owner, "victim file.txt", 100, "127.0.0.1:1111")
        genuine = (await reader.find_providers(file_id))[0]
        attacker = Identity.generate()
        key = file_key(file_id)
        now = time.time()

        tampered = forge(genuine, grpc="6.6.6.6:6666")
        # the owner's id and key, signed with the attacker's key
        unsigned = replace(genuine, grpc="6.6.6.6:6666", issued_at=now, signature=b"")
        forged = encode_record(replace(unsigned, signature=attacker.sign(
            signed_message(unsigned))))
        # attacker's own key and signature, but claims the owner's node id
        unsigned = replace(unsigned, public_key=attacker.public_key)
        wrong_owner = encode_record(replace(unsigned, signature=attacker.sign(
            signed_message(unsigned))))
        # a genuine attacker record whose fields exceed the limits (built by hand)
        mine = make_provider(attacker, file_id, "x.txt", 1, "6.6.6.6:1", ttl=300)

        def signed(**changes: object) -> bytes:
            rec = replace(mine, **changes, signature=b"")
            return encode_record(replace(rec, signature=attacker.sign(signed_message(rec))))

        oversize = signed(name="n" * 2000)
        far_future = signed(issued_at=now + 3600)
        ttl_too_long = signed(ttl=CONFIG.max_record_ttl + 1)
        expired = signed(issued_at=now - 400)
        wrong_key = encode_record(make_provider(attacker, fid("other"), "o.txt", 1,
                                                "6.6.6.6:1", ttl=300))
        bad = {
            "tampered": tampered, "forged": forged, "wrong_owner": wrong_owner,
            "oversize": oversize, "far_future": far_future, "ttl_too_long": ttl_too_long,
            "expired": expired, "wrong_key": wrong_key,
        }
        for label, raw in bad.items():
            results = await store_everywhere(stranger, nodes, key, [raw])
            assert results == [(0, 1)] * N_NODES, f"{label} accepted somewhere: {results}"
        # every storing node still holds the one genuine record, and a reader sees only it
        for node in nodes:
            held = node.store.records(key)
            assert [r.grpc for r, _ in held] == ["127.0.0.1:1111"], (node, held)
        found = await reader.find_providers(file_id)
        assert [(r.node_id, r.grpc) for r in found] == [(owner.node_id, "127.0.0.1:1111")]

    async def test_replayed_older_record_loses_to_newer_and_to_withdrawal(
        self, nodes: list[DhtNode], stranger: Stranger
    ) -> None:
        owner, reader = nodes[2], nodes[4]
        file_id = await announced(owner, "moving file.txt", 5, "127.0.0.1:2001")
        key = file_key(file_id)
        old = await reader.find_providers(file_id)
        old_raw = encode_record(old[0])
        await asyncio.sleep(0.01)
        await owner.announce(file_id, "moving file.txt", 5, grpc="127.0.0.1:2002")
        assert await wait_for(lambda: _grpcs(reader, file_id, {"127.0.0.1:2002"}))
        results = await store_everywhere(stranger, nodes, key, [old_raw])
        assert results == [(0, 1)] * N_NODES, results
        assert [r.grpc for r in await reader.find_providers(file_id)] == ["127.0.0.1:2002"]

        newest_raw = encode_record((await reader.find_providers(file_id))[0])
        await owner.withdraw(file_id)
        assert await wait_for(lambda: _grpcs(reader, file_id, set()))
        results = await store_everywhere(stranger, nodes, key, [newest_raw, old_raw])
        assert results == [(0, 2)] * N_NODES, results
        assert await reader.find_providers(file_id) == []

    async def test_withdrawal_by_someone_else_does_not_remove_the_record(
        self, nodes: list[DhtNode], stranger: Stranger
    ) -> None:
        owner, reader = nodes[3], nodes[0]
        file_id = await announced(owner, "kept file.txt", 7, "127.0.0.1:3001")
        attacker = Identity.generate()
        # a valid withdrawal, but it is the attacker's own slot: it cannot touch the owner's
        w = make_withdrawal(attacker, "file:" + file_id, file_id, ttl=300)
        await store_everywhere(stranger, nodes, file_key(file_id), [encode_record(w)])
        # the owner's slot with the attacker's signature on a withdrawal: rejected
        forged = replace(w, node_id=owner.node_id, public_key=owner.identity.public_key)
        results = await store_everywhere(stranger, nodes, file_key(file_id),
                                         [encode_record(forged)])
        assert results == [(0, 1)] * N_NODES
        found = await reader.find_providers(file_id)
        assert [r.node_id for r in found] == [owner.node_id]


async def _grpcs(node: DhtNode, file_id: str, want: set[str]) -> bool:
    return {r.grpc for r in await node.find_providers(file_id)} == want


class TestFlood:
    async def test_one_sender_flooding_stays_within_caps(
        self, nodes: list[DhtNode], stranger: Stranger
    ) -> None:
        honest = {}
        for i, node in enumerate(nodes[1:4]):
            file_id = await announced(node, f"honest {i}.txt", 10 + i, f"127.0.0.1:{4000 + i}")
            honest[file_id] = node.node_id
        target = nodes[0]
        attacker = Identity.generate()
        cap = CONFIG.max_records_per_owner
        flood = cap + 500
        sent = accepted = 0
        for start in range(0, flood, 64):
            batch = []
            for j in range(start, min(start + 64, flood)):
                rec = make_provider(attacker, fid(f"junk {j}"), f"junk {j}.bin", j,
                                    "6.6.6.6:1", ttl=300)
                batch.append((file_key(rec.file_id), encode_record(rec)))
            # one store per key (records live under their own file key)
            for key, raw in batch:
                reply = await stranger.request(("127.0.0.1", target.port), "store",
                                               [os.urandom(20), key, [raw]])
                sent += 1
                if reply and reply[0] == 1:
                    accepted += reply[1]["stored"]
        held = target.store.owner_count(attacker.node_id_hex)
        assert held <= cap
        assert accepted == held
        # every honest record survives at the flooded node and is found by everyone
        for file_id, owner in honest.items():
            assert [r.node_id for r, _ in target.store.records(file_key(file_id))] == [owner]
            assert [r.node_id for r in await nodes[5].find_providers(file_id)] == [owner]
        print(f"\nflood: {sent} valid stores from one owner -> {held} held "
              f"(cap {cap}); honest records kept {len(honest)}/{len(honest)}; "
              f"node bytes {target.store.total_bytes}")


def id_proof(me: Identity, method: str, args: list) -> dict:
    """The fields a ping answer needs for the asker to admit ``me`` (its nonce signed)."""
    if method == "ping" and len(args) > 1:
        return make_proof(me, args[1], args[0])
    return {}


class TestRouting:
    async def test_silent_sender_never_enters_routing_tables(
        self, nodes: list[DhtNode], stranger: Stranger
    ) -> None:
        """Requests from a sender that does not answer our probe never make it a contact."""
        ids = [os.urandom(20) for _ in range(30)]
        for node in nodes:
            for sender_id in ids:
                await stranger.request(("127.0.0.1", node.port), "find_node",
                                       [sender_id, os.urandom(20)], timeout=2)
        await asyncio.sleep(CONFIG.rpc_timeout_max + 0.5)  # let every probe time out
        probed = {addr for method, addr in stranger.requests_seen if method == "ping"}
        assert probed, "nodes should probe an unknown requester"
        for node in nodes:
            assert stranger.address[1] not in {c.port for c in node.contacts()}
            assert not {c.node_id for c in node.contacts()} & {i.hex() for i in ids}

    async def test_answering_sender_enters_with_the_id_it_answers(
        self, nodes: list[DhtNode]
    ) -> None:
        """The positive control: a sender that answers the probe with a proof that it
        holds its id's key becomes a contact (a bare {id} answer does not: TestAdmission)."""
        me = Identity.generate()
        my_id = me.node_id
        s = await Stranger.open(answer=lambda m, a, addr: {"id": my_id, **id_proof(me, m, a)})
        try:
            await s.request(("127.0.0.1", nodes[0].port), "ping", [my_id])

            async def known() -> bool:
                return my_id.hex() in {c.node_id for c in nodes[0].contacts()}

            assert await wait_for(known)
        finally:
            s.close()

    async def test_stranger_cannot_take_over_a_known_contact(
        self, nodes: list[DhtNode]
    ) -> None:
        """Answering a probe with someone else's id must not redirect that id to us."""
        victim, honest_peer = nodes[0], nodes[1]
        s = await Stranger.open(answer=lambda m, a, addr: {"id": bytes.fromhex(
            honest_peer.node_id)})
        try:
            for _ in range(3):
                await s.request(("127.0.0.1", victim.port), "ping", [os.urandom(20)])

            async def probed() -> bool:
                return any(m == "ping" for m, _ in s.requests_seen)

            assert await wait_for(probed), "the victim never probed the stranger"
            await asyncio.sleep(0.5)  # let the probe's answer be processed
            ports = {c.port for c in victim.contacts() if c.node_id == honest_peer.node_id}
            assert ports == {honest_peer.port}, f"contact hijacked: {ports}"
            # and lookups from the victim still reach the honest peer's records
            file_id = await announced(honest_peer, "after.txt", 1, "127.0.0.1:5001")
            found = await victim.find_providers(file_id)
            assert [r.node_id for r in found] == [honest_peer.node_id]
        finally:
            s.close()

    async def test_timeout_at_an_advertised_address_does_not_evict_the_contact(
        self, nodes: list[DhtNode]
    ) -> None:
        """A reply may list a known id at a dead address; its timeout must not evict the id.

        (In a large network a lookup queries such an entry when the real contact is not
        among its starting set; the timeout used to remove the id whatever the address.)
        """
        victim, honest_peer = nodes[0], nodes[1]
        dead = await Stranger.open()  # bound, never answers
        try:
            reply = await dead.request(("127.0.0.1", victim.port), "find_node",
                                       [os.urandom(20), os.urandom(20)])
            assert reply is not None
            fake = Node(bytes.fromhex(honest_peer.node_id), "127.0.0.1", dead.address[1])
            assert await victim.protocol.call_ping(fake) is None  # times out
            ports = {c.port for c in victim.contacts() if c.node_id == honest_peer.node_id}
            assert ports == {honest_peer.port}
        finally:
            dead.close()

    async def test_contacts_given_by_name_are_never_resolved_or_contacted(
        self, nodes: list[DhtNode]
    ) -> None:
        """A reply may only point at IP literals: a host name would make the node resolve
        it (a blocking DNS lookup on the event loop, for a server the attacker may slow
        down at will) and send wherever it resolves."""
        victim = nodes[0]
        trap = await Stranger.open()  # listens on 127.0.0.1; reachable as "localhost"
        evil = Identity.generate()
        evil_id = evil.node_id

        def answer(method: str, args: list, addr: tuple[str, int]) -> dict:
            if method == "ping":
                return {"id": evil_id, **id_proof(evil, method, args)}
            named = [[os.urandom(20), name, trap.address[1]]
                     for name in ("localhost", "localhost.", "ip6-localhost")]
            return {"id": evil_id, "nodes": named, "records": [], "next": None}

        peer = await Stranger.open(answer=answer)
        try:
            await peer.request(("127.0.0.1", victim.port), "ping", [evil_id])

            async def knows_evil() -> bool:
                return evil_id.hex() in {c.node_id for c in victim.contacts()}

            assert await wait_for(knows_evil)
            for i in range(3):
                await victim.find_providers(fid(f"anything {i}"))
            assert trap.requests_seen == [], trap.requests_seen
        finally:
            peer.close()
            trap.close()

    async def test_prefix_cap_limits_one_subnet_per_bucket(self) -> None:
        """With the cap applied to loopback, one /24 gets at most N contacts in a bucket."""
        cfg = DhtConfig.for_tests(prefix_cap_on_loopback=True, max_contacts_per_prefix=2)
        node = DhtNode(config=cfg)
        await node.listen(port=0, interface="127.0.0.1")
        sybils: list[Stranger] = []
        try:
            for _ in range(8):
                me = Identity.generate()
                s = await Stranger.open(
                    answer=lambda m, a, addr, me=me: {"id": me.node_id, **id_proof(me, m, a)})
                sybils.append(s)
                await s.request(("127.0.0.1", node.port), "ping", [me.node_id])

            async def all_probed() -> bool:
                return len(node.contacts()) + node.protocol.router.rejected_by_prefix >= 8

            assert await wait_for(all_probed)
            assert len(node.contacts()) == 2, node.contacts()
            assert node.protocol.router.rejected_by_prefix >= 6
        finally:
            node.stop()
            for s in sybils:
                s.close()


class TestKeywordPoisoning:
    async def test_ten_thousand_fake_entries_do_not_hide_real_files(
        self, nodes: list[DhtNode], stranger: Stranger
    ) -> None:
        real = {}
        for i, (node, name) in enumerate(zip(nodes[1:4], ["Holiday beach.jpg",
                                                           "holiday mountains.png",
                                                           "HOLIDAY city tour.mp4"], strict=True)):
            file_id = await announced(node, name, 1000 + i, f"127.0.0.1:{6000 + i}")
            real[file_id] = name
        spammer = Identity.generate()
        key = keyword_key("holiday")
        total, per_datagram = 10_000, 16
        accepted_at_node = [0] * N_NODES
        for start in range(0, total, per_datagram):
            batch = [
                encode_record(make_keyword(spammer, "holiday", fid(f"spam {j}"),
                                           f"holiday spam {j}.exe", j, ttl=300))
                for j in range(start, min(start + per_datagram, total))
            ]
            # the key's closest nodes are all six here: the spammer hits every one
            node = nodes[(start // per_datagram) % N_NODES]
            reply = await stranger.request(("127.0.0.1", node.port), "store",
                                           [spammer.node_id, key, batch])
            if reply and reply[0] == 1:
                accepted_at_node[nodes.index(node)] += reply[1]["stored"]
        held = [sum(1 for r, _ in n.store.records(key) if r.node_id == spammer.node_id_hex)
                for n in nodes]
        hits = await nodes[5].search("holiday")
        found = {h.file_id for h in hits}
        assert set(real) <= found, f"real files hidden: {len(found)} hits"
        assert max(held) <= CONFIG.max_keyword_entries_per_owner
        print(f"\npoisoning: {total} fake entries under 'holiday' from one publisher -> "
              f"held per node {held} (cap {CONFIG.max_keyword_entries_per_owner}); "
              f"search found {len(set(real) & found)}/{len(real)} real files among "
              f"{len(hits)} hits")


class TestSybil:
    async def test_sybil_flood_of_a_file_key_does_not_lock_out_new_providers(
        self, nodes: list[DhtNode]
    ) -> None:
        """5,000 identities from 10 /24 networks (127.0.1.0/24 .. 127.0.10.0/24 on
        loopback) fill the file key's 512 slots at every storing node; a provider
        announced before the flood stays and one announced after it gets in."""
        file_id = fid("popular file")
        key = file_key(file_id)
        await nodes[1].announce(file_id, "popular.iso", 9, grpc="127.0.0.1:7001")
        prefixes = 10
        strangers = [await Stranger.open(host=f"127.0.{p + 1}.1") for p in range(prefixes)]
        try:
            flood = [
                encode_record(make_provider(Identity.generate(), file_id, "popular.iso", 9,
                                            f"127.0.{j % prefixes + 1}.2:{j + 1}", ttl=300))
                for j in range(5000)
            ]
            for start in range(0, len(flood), 16):
                await store_everywhere(strangers[start // 16 % prefixes], nodes, key,
                                       flood[start:start + 16])
            for node in nodes:  # the attack did fill the key everywhere
                assert len(node.store.records(key)) == CONFIG.max_records_per_key
        finally:
            for s in strangers:
                s.close()
        await nodes[2].announce(file_id, "popular.iso", 9, grpc="127.0.0.1:7002")
        for node in nodes:
            mine = {r.grpc for r, _ in node.store.records(key) if r.kind == "p"}
            assert {"127.0.0.1:7001", "127.0.0.1:7002"} <= mine, f"missing at {node}"
        found = {r.grpc for r in await nodes[5].find_providers(file_id)}
        assert "127.0.0.1:7001" in found  # the earlier provider survives
        assert "127.0.0.1:7002" in found  # the later one gets a slot (refused before)


class TestFloodLimits:
    """Rate limits per sender and no reflection amplification (issue 16, item 2)."""

    async def test_find_records_answer_to_an_unproven_address_is_at_most_three_times_the_request(
        self, nodes: list[DhtNode], stranger: Stranger
    ) -> None:
        file_id = fid("big key")
        key = file_key(file_id)
        recs = [encode_record(make_provider(Identity.generate(), file_id, "big.iso", 9,
                                            f"127.0.0.1:{j + 1}", ttl=300)) for j in range(60)]
        await store_everywhere(stranger, nodes[:1], key, recs[:30])
        await store_everywhere(stranger, nodes[:1], key, recs[30:])
        spoofer = await Stranger.open()  # never answers anything: an unproven address
        try:
            request = raw_request("find_records", [os.urandom(20), key, 0], b"\x01" * 8)
            reply = await spoofer.request(("127.0.0.1", nodes[0].port), "find_records",
                                          [os.urandom(20), key, 0])
            assert reply is not None and reply[0] == 1
            size = len(encode_datagram(RESPONSE, b"\x01" * 8, reply[1]))
            assert size <= 3 * len(request), (size, len(request))
            assert reply[1]["next"] == 0 and isinstance(reply[1]["cookie"], bytes)
            # echoing the cookie proves the address: the next answer is a full page
            again = await spoofer.request(("127.0.0.1", nodes[0].port), "find_records",
                                          [os.urandom(20), key, 0, reply[1]["cookie"]])
            assert again is not None and len(again[1]["records"]) >= 20
            assert "cookie" not in again[1]
        finally:
            spoofer.close()
        # an honest node (a stranger to nodes[0] too, but it answers) still finds all 60
        found = await nodes[3].find_providers(file_id)
        assert len(found) == 60

    async def test_a_store_flood_from_one_sender_is_cut_to_its_rate(self) -> None:
        cfg = replace(CONFIG, store_rate=20.0, rate_burst_seconds=1.0).validate()
        node = DhtNode(config=cfg)
        await node.listen(port=0, interface="127.0.0.1")
        flooder = await Stranger.open()
        honest = await Stranger.open()
        try:
            file_id = fid("flooded")
            rec = encode_record(make_provider(Identity.generate(), file_id, "f.iso", 9,
                                              "127.0.0.1:9", ttl=300))
            me = os.urandom(20)
            for _ in range(500):  # as fast as the socket goes, no waiting for answers
                flooder.send(encode_datagram(REQUEST, os.urandom(8),
                                             ["store", [me, file_key(file_id), [rec]]]),
                             ("127.0.0.1", node.port))
            await asyncio.sleep(0.5)
            stats = node.stats
            assert stats["rate_limited_store"] >= 400, stats
            # most were dropped undecoded (sender address + method bytes), yet a lookup
            # from the same address sent in the middle of its flood is still answered
            assert stats["rate_limited_early"] >= 300, stats
            for _ in range(50):
                flooder.send(encode_datagram(REQUEST, os.urandom(8),
                                             ["store", [me, file_key(file_id), [rec]]]),
                             ("127.0.0.1", node.port))
            reply = await flooder.request(("127.0.0.1", node.port), "find_node",
                                          [me, os.urandom(20)])
            assert reply is not None and reply[0] == 1
            # another sender is served, and the flooder again once its bucket refills
            assert await stored(honest, node, os.urandom(20), file_key(file_id), rec)
            await asyncio.sleep(0.2)
            assert await stored(flooder, node, me, file_key(file_id), rec)
        finally:
            flooder.close()
            honest.close()
            node.stop()

    @pytest.mark.skipif(not sys.platform.startswith("linux"),
                        reason="the kernel mute is a Linux socket filter")
    async def test_a_flood_far_over_budget_is_dropped_by_the_kernel(self) -> None:
        cfg = replace(CONFIG, store_rate=20.0, rate_burst_seconds=1.0, kernel_mute_after=100,
                      kernel_mute_seconds=0.6).validate()
        node = DhtNode(config=cfg)
        await node.listen(port=0, interface="127.0.0.1")
        assert node.protocol is not None
        flooder = await Stranger.open()
        honest = await Stranger.open()
        file_id = fid("kernel flooded")
        rec = encode_record(make_provider(Identity.generate(), file_id, "f.iso", 9,
                                          "127.0.0.1:9", ttl=300))
        me = os.urandom(20)
        store = ["store", [me, file_key(file_id), [rec]]]
        try:
            for _ in range(400):
                flooder.send(encode_datagram(REQUEST, os.urandom(8), store),
                             ("127.0.0.1", node.port))
            await asyncio.sleep(0.3)
            assert node.stats["kernel_mutes"] == 1, node.stats
            assert node.protocol.kernel_muted() == [flooder.address]
            seen = node.stats["requests_in"] + node.stats["rate_limited_early"]
            for _ in range(300):  # these never reach the process
                flooder.send(encode_datagram(REQUEST, os.urandom(8), store),
                             ("127.0.0.1", node.port))
            reply = await flooder.request(("127.0.0.1", node.port), "find_node",
                                          [me, os.urandom(20)])
            assert reply is not None and reply[0] == 1  # its lookups are still answered
            assert node.stats["requests_in"] + node.stats["rate_limited_early"] - seen <= 2
            # another sender's stores are served
            assert await stored(honest, node, os.urandom(20), file_key(file_id), rec)
            await asyncio.sleep(0.8)  # the sentence ends; its bucket earns tokens again
            assert node.protocol.kernel_muted() == []
            assert await stored(flooder, node, me, file_key(file_id), rec)
        finally:
            flooder.close()
            honest.close()
            node.stop()

    async def test_senders_of_one_network_share_its_budget(self) -> None:
        cfg = replace(CONFIG, lookup_rate=20.0, prefix_rate_factor=2.0, rate_burst_seconds=1.0,
                      prefix_cap_on_loopback=True).validate()
        node = DhtNode(config=cfg)
        await node.listen(port=0, interface="127.0.0.1")
        crowd = [await Stranger.open(host="127.0.7.1") for _ in range(10)]
        other = await Stranger.open(host="127.0.8.1")
        try:
            for s in crowd:  # 10 ports x 15 lookups: each within its own 20, not the /24's 40
                for _ in range(15):
                    s.send(encode_datagram(REQUEST, os.urandom(8),
                                           ["find_node", [os.urandom(20), os.urandom(20)]]),
                           ("127.0.0.1", node.port))
            await asyncio.sleep(0.5)
            assert node.stats["rate_limited_lookup_prefix"] >= 150 - 45, node.stats
            assert node.stats["rate_limited_lookup"] == 0
            reply = await other.request(("127.0.0.1", node.port), "find_node",
                                        [os.urandom(20), os.urandom(20)])
            assert reply is not None and reply[0] == 1  # another network is served
        finally:
            for s in [*crowd, other]:
                s.close()
            node.stop()
