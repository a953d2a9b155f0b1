"""--warmup direct: converged routing tables instead of real joins (simulations/warmup.py)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht import DhtConfig, DhtNode
from dht.identity import Identity
from simulations.churn import SpecError
from simulations.config import SimConfig
from simulations.engine import run_trace
from simulations.scenarios import build_trace
from simulations.vloop import run_virtual
from simulations.warmup import ID_BITS, converged_contacts


def _bucket(a: int, b: int, digit_bits: int) -> tuple[int, int]:
    """Which converged bucket of node a holds id b: the bit at which they first differ
    (0 = most significant) and the sub-range below it (see converged_contacts)."""
    bit = ID_BITS - (a ^ b).bit_length()
    shift = ID_BITS - 1 - bit
    extra = min(shift, digit_bits - 1 - bit % digit_bits)
    return bit, (b >> (shift - extra)) & ((1 << extra) - 1)


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=2**ID_BITS - 1), min_size=1, max_size=120),
       st.integers(min_value=1, max_value=8), st.sampled_from([1, 5]),
       st.integers(min_value=0, max_value=150))
def test_every_bucket_range_gets_k_contacts_or_all_of_them(
        values: set[int], k: int, digit_bits: int, shift: int) -> None:
    # Ids squeezed into a small range too, so deep buckets and sub-ranges get exercised.
    values = {v >> shift for v in values}
    ids = {i: v.to_bytes(20, "big") for i, v in enumerate(sorted(values))}
    tables = converged_contacts(ids, k, random.Random(1), digit_bits)
    assert set(tables) == set(ids)
    for me, picks in tables.items():
        mine = int.from_bytes(ids[me], "big")
        assert me not in picks and len(set(picks)) == len(picks)
        got: dict[tuple[int, int], int] = {}
        for j in picks:
            b = _bucket(mine, int.from_bytes(ids[j], "big"), digit_bits)
            got[b] = got.get(b, 0) + 1
        want: dict[tuple[int, int], int] = {}
        for j in ids:
            if j != me:
                b = _bucket(mine, int.from_bytes(ids[j], "big"), digit_bits)
                want[b] = want.get(b, 0) + 1
        assert got == {b: min(k, n) for b, n in want.items()}
        # Farthest bucket first: the order a splitting routing table can take them in.
        bits = [_bucket(mine, int.from_bytes(ids[j], "big"), digit_bits)[0] for j in picks]
        assert bits == sorted(bits)


def test_a_prefilled_table_takes_every_contact_it_is_given() -> None:
    """The ranges match how the routing table splits, so (almost) nothing is left over
    as a replacement: the table really starts converged."""
    keys = {i: Identity.generate() for i in range(3000)}
    ids = {i: key.node_id for i, key in keys.items()}
    tables = converged_contacts(ids, 20, random.Random(4))

    async def fill() -> list[tuple[int, int]]:
        counts = []
        for i in range(0, 3000, 500):
            node = DhtNode(identity=keys[i], config=DhtConfig.for_tests())
            await node.listen(port=0, interface="127.0.0.1")
            try:
                picks = tables[i]
                taken = node.prefill([(ids[j], ("127.0.0.1", 9)) for j in picks])
                counts.append((taken, len(picks)))
            finally:
                node.stop()
        return counts

    for taken, given_ in asyncio.run(fill()):
        assert given_ > 200 and taken >= 0.97 * given_, (taken, given_)


def test_duplicate_ids_and_a_zero_k_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        converged_contacts({1: b"\0" * 20, 2: b"\0" * 20}, 3, random.Random(1))
    with pytest.raises(ValueError, match="k and digit_bits"):
        converged_contacts({1: b"\0" * 20}, 0, random.Random(1))


async def test_prefilled_real_nodes_find_each_other_without_a_join() -> None:
    """Real UDP on loopback: nodes that never bootstrapped, handed each other as
    contacts, store and find a provider record."""
    nodes = [DhtNode(config=DhtConfig.for_tests()) for _ in range(6)]
    try:
        for n in nodes:
            await n.listen(port=0, interface="127.0.0.1")
        ids = {i: n.identity.node_id for i, n in enumerate(nodes)}
        for i, picks in converged_contacts(ids, 20, random.Random(2)).items():
            assert nodes[i].prefill([(ids[j], (nodes[j].host, nodes[j].port)) for j in picks]) == 5
        fid = hashlib.sha256(b"prefilled").hexdigest()
        stored = await asyncio.wait_for(
            nodes[0].announce(fid, "prefilled.bin", 9, grpc="127.0.0.1:1"), 10)
        assert stored >= 1
        found = await asyncio.wait_for(nodes[5].find_providers(fid), 10)
        assert [r.grpc for r in found] == ["127.0.0.1:1"]
        # Answers from prefilled contacts need no id proof round trip.
        assert sum(n.stats["id_proofs_ok"] for n in nodes) == 0
    finally:
        for n in nodes:
            n.stop()


def _run(impl: str, warmup: str, observe: Any = None) -> dict:
    cfg = SimConfig(scenario="churn", nodes=60, duration=60, files=6, providers=2,
                    lookup_rate=2, seed=5, runner="virtual", latency=(0.01, 0.03),
                    intervals="production", warmup=warmup, progress=False)
    out = run_virtual(run_trace(build_trace(cfg), impl, observe=observe))
    return out.summary


def test_an_observer_sees_every_second_and_the_nodes_counters_without_changing_the_run(
        ) -> None:
    # benchmarks/sim_scale.py --slices reads the nodes' counters this way.
    seconds: list[int] = []
    latest: dict[int, dict[str, int]] = {}

    def observe(sec: int, up: list[Any]) -> None:
        seconds.append(sec)
        for handle in up:
            latest[id(handle)] = handle.counters()

    watched, plain = _run("kadshare", "direct", observe), _run("kadshare", "direct")
    # every second in order until the run ends (its last tick may fall after the end)
    assert seconds == list(range(len(seconds))) and len(seconds) >= 60
    found = sum(c.get("lookups_find", 0) for c in latest.values())
    published = sum(c.get("lookups_publish", 0) for c in latest.values())
    assert found >= watched["lookups_eligible"] // 2 and published > 0
    assert sum(c.get("requests_out", 0) for c in latest.values()) > found
    strip = ("warmup_s", "harness_cpu_fraction", "loop_lag_p99_ms", "loop_lag_max_ms")
    assert {k: v for k, v in watched.items() if k not in strip} == \
        {k: v for k, v in plain.items() if k not in strip}


@pytest.mark.parametrize("impl", ["kadshare", "kademlia"])
def test_a_direct_warmup_run_works_and_repeats(impl: str) -> None:
    a, b = _run(impl, "direct"), _run(impl, "direct")
    assert a["join_failures"] == 0 and a["lookups_eligible"] >= 40, a
    assert a["success"] >= (0.99 if impl == "kadshare" else 0.5), a
    strip = ("warmup_s", "harness_cpu_fraction", "loop_lag_p99_ms", "loop_lag_max_ms")
    assert {k: v for k, v in a.items() if k not in strip} == \
        {k: v for k, v in b.items() if k not in strip}


def test_direct_warmup_needs_the_nodes_in_this_process() -> None:
    with pytest.raises(SpecError, match="--warmup direct needs"):
        SimConfig(runner="process", warmup="direct").validate()
    with pytest.raises(SpecError, match="--warmup must be"):
        SimConfig(warmup="fast").validate()


@pytest.mark.parametrize("impl", ["kadshare", "kademlia"])
def test_the_virtual_runner_tells_a_node_id_without_spawning_the_node(
        impl: str, tmp_path: Path) -> None:
    # The sharded direct warm-up relies on it: every rank knows every initial node's id.
    from simulations.impls import make_impl
    from simulations.netmodel import NetModel
    from simulations.runners.virtual import VirtualRunner

    cfg = SimConfig(runner="virtual", seed=3, impl=impl)
    runner = VirtualRunner(cfg, make_impl(impl), NetModel(seed=3), tmp_path)
    for idx in (0, 1, 17):
        node = asyncio.run(runner.spawn(idx))
        assert node.node_id is not None and runner.node_id(idx) == node.node_id
    assert runner.node_id(0) != runner.node_id(1)
    other = VirtualRunner(cfg.with_changes(seed=4), make_impl(impl), NetModel(seed=4), tmp_path)
    assert other.node_id(0) != runner.node_id(0)
