"""The chunk scheduler: whatever sources do (finish, fail, get stolen from), no chunk is lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pclient.download.scheduler import _Run, _Scheduler

SOURCES = ["a", "b", "c"]


def _owed(sched: _Scheduler, index: int) -> bool:
    return index in sched.pending or any(r.next <= index < r.end for r in sched.inflight)


@given(
    total=st.integers(min_value=1, max_value=40),
    run_chunks=st.integers(min_value=1, max_value=8),
    resumed=st.sets(st.integers(min_value=0, max_value=39), max_size=10),
    steps=st.lists(st.tuples(st.sampled_from(SOURCES), st.sampled_from(["take", "chunk", "fail"])),
                   max_size=120),
)
def test_no_chunk_is_lost_and_a_good_source_always_finishes(total, run_chunks, resumed, steps):
    done = bytearray(total)
    for i in resumed:
        if i < total:
            done[i] = 1
    sched = _Scheduler(total, done, run_chunks)
    runs: dict[str, list[_Run]] = {s: [] for s in SOURCES}

    def deliver(run: _Run) -> None:
        sched.chunk_done(run.next)
        run.next += 1

    for source, action in steps:
        mine = [r for r in runs[source] if r.next < r.end]
        if action == "take" and not mine:
            run = sched.take(source)
            if run is not None:
                runs[source].append(run)
        elif action == "chunk" and mine:
            deliver(mine[0])
            if mine[0].next >= mine[0].end:
                sched.finish(mine[0])
        elif action == "fail" and mine:
            for run in mine:
                sched.finish(run)
            runs[source] = []
        for i in range(total):
            assert done[i] or _owed(sched, i), f"chunk {i} lost"

    # every other source fails; one good source must then finish the file
    for source in SOURCES:
        for run in runs[source]:
            sched.finish(run)
    for _ in range(10 * total + 10):
        if sched.complete:
            break
        run = sched.take("good")
        assert run is not None, "work left but nothing to take"
        while run.next < run.end:
            deliver(run)
        sched.finish(run)
    assert sched.complete and all(done)


def test_a_stream_steals_from_another_source_never_from_its_own_sources_other_stream():
    sched = _Scheduler(8, bytearray(8), 8)
    first = sched.take("a")
    assert (first.next, first.end) == (0, 8)
    assert sched.take("a") is None  # a's second stream: the rest is a's already
    stolen = sched.take("b")
    assert stolen is not None and (stolen.next, stolen.end) == (4, 8) and first.end == 4


# -- partial sources and swarms (issue 12 item 3) -------------------------------------------


def _flags(total: int, held: range | list[int]) -> bytearray:
    flags = bytearray(total)
    for i in held:
        flags[i] = 1
    return flags


def test_full_sources_alone_keep_taking_the_lowest_chunks_in_runs():
    sched = _Scheduler(10, bytearray(10), run_chunks=4)
    run = sched.take("seed")
    assert (run.next, run.end) == (0, 4)


def test_a_partial_source_gets_only_chunks_it_holds_and_the_rarest_first():
    sched = _Scheduler(8, bytearray(8), run_chunks=8)
    sched.set_have("a", _flags(8, range(0, 4)))   # chunks 0-3
    sched.set_have("b", _flags(8, [0, 1, 5]))      # 0 and 1 are held twice: less rare
    run = sched.take("a")
    assert (run.next, run.end) == (2, 4)           # the rarest it holds, never past 3
    run = sched.take("b")
    assert (run.next, run.end) == (5, 6)
    assert sched.take("b").next in (0, 1)
    sched.forget("a")                              # it left: its chunks no longer count
    assert sched.avail.count[2] == 0 and sched.avail.count[0] == 1


def test_a_swarm_shares_the_seeds_chunks_out_between_downloaders():
    """Two downloaders that know each other ask the seed for disjoint chunks, and each
    fetches from the other only what the other holds."""
    total = 64
    a = _Scheduler(total, bytearray(total), run_chunks=1, spread=True, me="node-a")
    b = _Scheduler(total, bytearray(total), run_chunks=1, spread=True, me="node-b")
    a.set_have("b-addr", bytearray(total), "node-b")
    b.set_have("a-addr", bytearray(total), "node-a")
    assert all(a.avail.mine[i] != b.avail.mine[i] for i in range(total))
    assert 0 < sum(a.avail.mine) < total
    asked_a = {a.take("seed").next for _ in range(sum(a.avail.mine))}
    asked_b = {b.take("seed").next for _ in range(sum(b.avail.mine))}
    assert not asked_a & asked_b and len(asked_a | asked_b) == total
    assert a.take("seed") is None                  # the rest is b's to fetch (for a while)
    assert a.take("b-addr") is None                # b holds nothing yet


def test_a_seed_in_a_swarm_skips_chunks_a_partial_source_holds():
    total = 6
    sched = _Scheduler(total, bytearray(total), run_chunks=6, spread=True, me="me")
    sched.set_have("peer", _flags(total, [0, 1, 2]), "someone")
    taken: set[int] = set()
    for _ in range(total):
        run = sched.take("seed")
        if run is None:
            break
        taken.update(range(run.next, run.end))
    assert not taken & {0, 1, 2}
