"""Which chunk each source fetches next: runs, work stealing and an endgame.

A source takes a *run*: the chunk ``Availability.pick`` chooses for it (lowest index
with full sources only; rarest first once partial sources are known; see
availability.py for the swarm's rules), then the consecutive chunks after it that it
may also send, up to ``run_chunks`` (one ``Download`` call). A worker with nothing left
to take steals the back half of the largest run in flight that its source can serve,
then fetches copies of chunks a slow source still owes (the endgame).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pclient.download.availability import Availability

log = logging.getLogger(__name__)


class _Run:
    """Consecutive chunks [next, end) assigned to one worker; ``end`` may shrink."""

    __slots__ = ("next", "end", "source")

    def __init__(self, start: int, end: int, source: str) -> None:
        self.next = start
        self.end = end
        self.source = source


class _Scheduler:
    """Missing chunks, in-flight runs, who holds what, work stealing and an endgame."""

    def __init__(self, total_chunks: int, done: bytearray, run_chunks: int,
                 spread: bool = False, me: str = "") -> None:
        self.total = total_chunks
        self.done = done
        self.run_chunks = max(1, run_chunks)
        #: 1 = missing and in no run (waiting to be taken).
        self.want = bytearray(0 if d else 1 for d in done)
        self.inflight: list[_Run] = []
        self.remaining = total_chunks - sum(1 for d in done if d)
        self.avail = Availability(total_chunks, spread=spread, me=me)
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def complete(self) -> bool:
        return self.remaining == 0

    @property
    def pending(self) -> list[int]:
        """Chunks waiting to be taken, in index order."""
        return [i for i in range(self.total) if self.want[i]]

    @property
    def have(self) -> dict[str, bytearray]:
        """Partial sources' chunks; a source not in here holds every chunk."""
        return self.avail.have

    def set_have(self, source: str, have: bytearray | None, member: str = "") -> None:
        """Record a source's chunks (None: a full source; ``member``: its node id)."""
        self.avail.set_have(source, have, member)
        self.notify()

    def forget(self, source: str) -> None:
        """A source left: its chunks no longer count toward availability."""
        if source in self.avail.have:
            self.set_have(source, None)

    def take(self, source: str) -> _Run | None:
        """Next run for ``source``: from the queue, else stolen; None if nothing now."""
        start = self.avail.pick(source, self.want)
        if start is not None:
            end = start + 1
            while (end < self.total and end - start < self.run_chunks and self.want[end]
                   and self.avail.may_extend(source, end)):
                end += 1
            for i in range(start, end):
                self.want[i] = 0
            run = _Run(start, end, source)
            self.inflight.append(run)
            return run
        return self._steal(source) or self._endgame(source)

    def _may_help(self, source: str, run: _Run) -> bool:
        """A full source in a swarm leaves runs of partial sources alone (they are faster
        than a capped seed, and the seed's upload is what the swarm lacks)."""
        return not (self.avail.seeding_rules(source) and run.source in self.avail.have)

    def _steal(self, source: str) -> _Run | None:
        """The back half of the largest run in flight that ``source`` can serve.

        Not from a run of the same source (another of its streams): the same peer would
        send those chunks anyway, and the victim's stream, already asked for them, would
        send some twice before it stops."""
        for victim in sorted(self.inflight, key=lambda r: r.next - r.end):
            if victim.end - victim.next < 2:
                break
            if victim.source == source:
                continue
            mid = victim.next + (victim.end - victim.next) // 2
            if self._may_help(source, victim) and all(
                    self.avail.holds(source, i) for i in range(mid, victim.end)):
                run = _Run(mid, victim.end, source)
                victim.end = mid
                self.inflight.append(run)
                log.debug("%s steals chunks %d-%d from %s", source, mid, run.end - 1,
                          victim.source)
                return run
        return None

    def _endgame(self, source: str) -> _Run | None:
        """Nothing to take or split: fetch a copy of a chunk another source still owes.

        The first verified copy counts; once every chunk is in, the download ends and the
        slow source's stream is cancelled, so one stalling source cannot hold up the end.
        """
        for run in self.inflight:
            index = run.next
            if (run.source != source and index < run.end and not self.done[index]
                    and self.avail.holds(source, index) and self._may_help(source, run)
                    and not self._covered(index, more_than=1)):
                copy = _Run(index, index + 1, source)
                self.inflight.append(copy)
                log.debug("%s also fetches chunk %d (owed by %s)", source, index, run.source)
                return copy
        return None

    def _covered(self, index: int, more_than: int = 0) -> bool:
        """True if more than ``more_than`` in-flight runs still owe chunk ``index``."""
        owners = sum(1 for r in self.inflight if r.next <= index < r.end)
        return owners > more_than

    def finish(self, run: _Run) -> None:
        """The worker stops working on ``run``; give unfinished, unowned chunks back."""
        with contextlib.suppress(ValueError):
            self.inflight.remove(run)
        back = [i for i in range(run.next, run.end)
                if not self.done[i] and not self._covered(i) and not self.want[i]]
        if back:
            for i in back:
                self.want[i] = 1
            self.notify()

    def chunk_done(self, index: int) -> None:
        if not self.done[index]:
            self.done[index] = 1
            self.want[index] = 0
            self.remaining -= 1
            if self.remaining == 0:
                self.notify()

    async def wait_change(self, timeout: float | None = None) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fut, timeout)

    def notify(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()
