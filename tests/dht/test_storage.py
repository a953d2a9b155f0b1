"""The record store: set semantics, replacement, withdrawal, caps, eviction, expiry."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht import DhtConfig, Identity, InvalidRecord
from dht.keys import file_key, keyword_key
from dht.records import encode_record, make_keyword, make_provider, make_withdrawal, storage_key
from dht.storage import RecordStore

FID = "cd" * 32


def fid(i: int) -> str:
    return f"{i:064x}"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class TestSetSemantics:
    def test_many_owners_under_one_key_are_all_kept(self) -> None:
        store = RecordStore(DhtConfig.for_tests())
        owners = [Identity.generate() for _ in range(10)]
        for i, ident in enumerate(owners):
            rec = make_provider(ident, FID, "f.bin", 1, f"127.0.0.1:{1000 + i}", 30)
            assert store.put(file_key(FID), rec) == RecordStore.STORED
        assert {r.node_id for r, _ in store.records(file_key(FID))} == {
            o.node_id_hex for o in owners
        }

    def test_newer_replaces_older_and_replayed_older_is_refused(self) -> None:
        store = RecordStore(DhtConfig.for_tests())
        me = Identity.generate()
        now = time.time()
        old = make_provider(me, FID, "f.bin", 1, "127.0.0.1:1", 30, issued_at=now - 5)
        new = make_provider(me, FID, "f.bin", 1, "127.0.0.1:2", 30, issued_at=now)
        assert store.put(file_key(FID), old) == RecordStore.STORED
        assert store.put(file_key(FID), new) == RecordStore.REPLACED
        assert store.put(file_key(FID), old) == RecordStore.STALE
        assert store.put_encoded(file_key(FID), encode_record(old)) == RecordStore.STALE
        assert [r.grpc for r, _ in store.records(file_key(FID))] == ["127.0.0.1:2"]

    def test_withdrawal_supersedes_and_blocks_replay(self) -> None:
        store = RecordStore(DhtConfig.for_tests())
        me = Identity.generate()
        now = time.time()
        rec = make_provider(me, FID, "f.bin", 1, "127.0.0.1:1", 30, issued_at=now - 1)
        store.put(file_key(FID), rec)
        gone = make_withdrawal(me, "file:" + FID, FID, 30, issued_at=now)
        assert store.put(file_key(FID), gone) == RecordStore.REPLACED
        assert store.put(file_key(FID), rec) == RecordStore.STALE
        assert [r.kind for r, _ in store.records(file_key(FID))] == ["w"]
        assert store.record_count() == 0

    def test_record_under_the_wrong_key_is_refused(self) -> None:
        store = RecordStore(DhtConfig.for_tests())
        rec = make_provider(Identity.generate(), FID, "f.bin", 1, "127.0.0.1:1", 30)
        with pytest.raises(InvalidRecord, match="does not belong"):
            store.put(file_key(fid(1)), rec)
        with pytest.raises(InvalidRecord):
            store.put_encoded(file_key(FID), b"\x93garbage")

    def test_each_record_expires_on_its_own_ttl(self) -> None:
        clock = Clock()
        store = RecordStore(DhtConfig.for_tests(), clock=clock)
        a, b = Identity.generate(), Identity.generate()
        store.put(file_key(FID), make_provider(a, FID, "f", 1, "h:1", 10, issued_at=clock.now))
        store.put(file_key(FID), make_provider(b, FID, "f", 1, "h:2", 20, issued_at=clock.now))
        clock.now += 15
        assert [r.node_id for r, _ in store.records(file_key(FID))] == [b.node_id_hex]
        assert store.expire() == 1
        clock.now += 10
        assert store.records(file_key(FID)) == []
        assert store.expire() == 1 and store.record_count(include_withdrawals=True) == 0
        assert store.keys() == [] and store.total_bytes == 0


class TestCaps:
    def test_flood_from_one_owner_stays_within_its_cap(self) -> None:
        cfg = DhtConfig.for_tests(max_records_per_owner=50)
        store = RecordStore(cfg)
        spammer, honest = Identity.generate(), Identity.generate()
        good = make_provider(honest, FID, "real.bin", 1, "h:1", 30)
        store.put(file_key(FID), good)
        results = [
            store.put(file_key(fid(i)), make_provider(spammer, fid(i), "spam", 1, "h:2", 30))
            for i in range(200)
        ]
        assert results.count(RecordStore.STORED) == 50
        assert store.owner_count(spammer.node_id_hex) == 50
        assert [r.node_id for r, _ in store.records(file_key(FID))] == [honest.node_id_hex]

    def test_full_key_evicts_from_the_biggest_owner_only(self) -> None:
        cfg = DhtConfig.for_tests(max_records_per_key=20)
        store = RecordStore(cfg)
        key = keyword_key("popular")
        spammer = Identity.generate()
        for i in range(16):
            store.put(key, make_keyword(spammer, "popular", fid(i), "popular spam", 1, 30))
        honest = [Identity.generate() for _ in range(8)]
        for i, ident in enumerate(honest):
            rec = make_keyword(ident, "popular", fid(1000 + i), "popular real", 1, 30)
            assert store.put(key, rec) == RecordStore.STORED
        owners = [r.node_id for r, _ in store.records(key)]
        assert len(owners) == 20
        assert all(o.node_id_hex in owners for o in honest)
        assert owners.count(spammer.node_id_hex) == 12

    def test_keyword_cap_per_publisher(self) -> None:
        cfg = DhtConfig.for_tests(max_keyword_entries_per_owner=5)
        store = RecordStore(cfg)
        key = keyword_key("music")
        spammer, honest = Identity.generate(), Identity.generate()
        statuses = [
            store.put(key, make_keyword(spammer, "music", fid(i), "music", 1, 30))
            for i in range(100)
        ]
        assert statuses.count(RecordStore.STORED) == 5
        assert store.put(key, make_keyword(honest, "music", FID, "music.mp3", 1, 30)) == "stored"

    def test_total_bytes_cap_evicts_the_largest_owner_soonest_expiring(self) -> None:
        one = len(encode_record(make_provider(Identity.generate(), FID, "f", 1, "h:1", 30)))
        cfg = DhtConfig.for_tests(max_store_bytes=one * 10)
        store = RecordStore(cfg)
        big, small = Identity.generate(), Identity.generate()
        for i in range(8):
            store.put(file_key(fid(i)), make_provider(big, fid(i), "f", 1, "h:1", 10 + i))
        for i in range(4):
            rec = make_provider(small, fid(100 + i), "f", 1, "h:1", 30)
            assert store.put(storage_key(rec), rec) == RecordStore.STORED
        assert store.total_bytes <= one * 10
        assert store.owner_count(small.node_id_hex) == 4
        assert store.owner_count(big.node_id_hex) == 6
        assert store.records(file_key(fid(0))) == []  # the soonest-expiring went first


class TestSybilSlots:
    """A full file key keeps room for new providers (rule 3c of storage.py)."""

    @staticmethod
    def _flood(store: RecordStore, n: int, reachable: dict[str, str]) -> None:
        for j in range(n):
            ident = Identity.generate()
            host = f"10.0.{j % 10}.{j % 200 + 1}"
            if reachable is not None:
                reachable[ident.node_id_hex] = host
            rec = make_provider(ident, FID, "f", 1, f"{host}:{j + 1}", 30)
            store.put(file_key(FID), rec, sender=(host, 4000))

    def test_reachable_sybils_from_ten_networks_leave_room_for_other_networks(self) -> None:
        reach: dict[str, str] = {}
        store = RecordStore(DhtConfig.for_tests(max_records_per_key=100), reachable=reach.get)
        self._flood(store, 400, reach)
        assert len(store.records(file_key(FID))) == 100
        for i in range(5):  # five honest providers, each from its own network
            ident = Identity.generate()
            reach[ident.node_id_hex] = f"192.0.{i}.7"
            rec = make_provider(ident, FID, "f", 1, f"192.0.{i}.7:1", 30)
            assert store.put(file_key(FID), rec, sender=(f"192.0.{i}.7", 4000)) == "stored"
        self._flood(store, 400, reach)  # a second wave does not push them out
        held = {r.grpc for r, _ in store.records(file_key(FID))}
        assert {f"192.0.{i}.7:1" for i in range(5)} <= held

    def test_unreachable_crowd_never_blocks_a_reachable_provider(self) -> None:
        reach: dict[str, str] = {}
        store = RecordStore(DhtConfig.for_tests(max_records_per_key=50), reachable=reach.get)
        self._flood(store, 300, None)  # nobody of the crowd ever answered us
        honest = Identity.generate()
        reach[honest.node_id_hex] = "10.0.3.9"  # even from a crowded network
        rec = make_provider(honest, FID, "f", 1, "10.0.3.9:1", 30)
        assert store.put(file_key(FID), rec, sender=("10.0.3.9", 4000)) == "stored"

    def test_a_provider_claiming_another_address_is_not_reachable(self) -> None:
        reach: dict[str, str] = {}
        store = RecordStore(DhtConfig.for_tests(max_records_per_key=50), reachable=reach.get)
        self._flood(store, 300, None)
        liar = Identity.generate()
        reach[liar.node_id_hex] = "10.0.3.9"  # answered us from here, claims elsewhere
        rec = make_provider(liar, FID, "f", 1, "203.0.113.5:1", 30)
        assert store.put(file_key(FID), rec, sender=("10.0.3.9", 4000)) == "capped"


class TestLiveCount:
    """``record_count`` is kept as records come and go (no scan): it must always equal
    what a scan of the store would count, and ``expire`` must drop exactly the expired."""

    OWNERS = [Identity.generate() for _ in range(3)]

    @staticmethod
    def _scan(store: RecordStore, now: float, withdrawals: bool) -> int:
        return sum(1 for key in store.keys() for r, _ in store.records(key)
                   if r.expires > now and (withdrawals or r.kind != "w"))

    @given(st.lists(st.tuples(st.sampled_from(["put", "withdraw", "tick", "expire", "clear"]),
                              st.integers(0, 2), st.integers(0, 3), st.integers(1, 40)),
                    max_size=40))
    @settings(max_examples=60, deadline=None)
    def test_count_matches_a_scan_through_puts_replacements_expiry_and_clear(
            self, ops: list[tuple[str, int, int, int]]) -> None:
        clock = Clock()
        store = RecordStore(DhtConfig.for_tests(), clock=clock)
        for op, owner, file_no, n in ops:
            ident, f = self.OWNERS[owner], fid(file_no)
            if op == "put":
                rec = make_provider(ident, f, "f", 1, "h:1", n, issued_at=clock.now)
                store.put(file_key(f), rec, verified=True)
            elif op == "withdraw":
                gone = make_withdrawal(ident, "file:" + f, f, n, issued_at=clock.now)
                store.put(file_key(f), gone, verified=True)
            elif op == "tick":
                clock.now += n / 4
            elif op == "expire":
                held = sum(len(store.records(k)) for k in store.keys())
                expired = sum(1 for k in store.keys() for slots in [store._data[k]]
                              for e in slots.values() if e.record.expires <= clock.now)
                assert store.expire() == expired
                assert sum(len(store.records(k)) for k in store.keys()) == held
            else:
                store.clear()
            for withdrawals in (False, True):
                assert store.record_count(withdrawals) == self._scan(store, clock.now,
                                                                      withdrawals)
