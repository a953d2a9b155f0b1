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
