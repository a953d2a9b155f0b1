"""Which chunk each source fetches next: rarest-first runs, work stealing and an endgame.

Full sources hold every chunk; a *partial* source (a peer still downloading the file)
holds the chunks of its ``have`` bitfield. A chunk's availability is how many partial
sources hold it (full sources add the same number to every chunk, so they do not change
the order). A source takes the rarest missing chunk it holds, then the consecutive
chunks after it that it also holds, up to ``run_chunks`` (one ``Download`` call). Ties
go to the first chunk from ``offset`` on: a swarm's downloaders start at different
places (a random offset each), so a capped seeder sends each of them different chunks
that they can then trade, instead of chunk 0 eight times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

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
                 offset: int = 0) -> None:
        self.total = total_chunks
        self.done = done
        self.run_chunks = max(1, run_chunks)
        self.offset = offset % total_chunks if total_chunks else 0
        #: 1 = missing and in no run (waiting to be taken).
        self.want = bytearray(0 if d else 1 for d in done)
        self._cursor = 0  # in rotated order: no wanted chunk before it
        self.inflight: list[_Run] = []
        self.remaining = total_chunks - sum(1 for d in done if d)
        #: Partial sources' chunks (1 = held); a source not in here holds every chunk.
        self.have: dict[str, bytearray] = {}
        self.count = [0] * total_chunks  # partial sources holding each chunk
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def complete(self) -> bool:
        return self.remaining == 0

    @property
    def pending(self) -> list[int]:
        """Chunks waiting to be taken, in index order."""
        return [i for i in range(self.total) if self.want[i]]

    # -- who holds what ------------------------------------------------------------------
    def set_have(self, source: str, have: bytearray | None) -> None:
        """Record a source's chunks (None: a full source); wakes waiting workers."""
        old = self.have.pop(source, None)
        if old is not None:
            for i in range(self.total):
                self.count[i] -= old[i]
        if have is not None:
            self.have[source] = have
            for i in range(self.total):
                self.count[i] += have[i]
        self.notify()

    def forget(self, source: str) -> None:
        """A source left: its chunks no longer count toward availability."""
        if source in self.have:
            self.set_have(source, None)

    def holds(self, source: str, index: int) -> bool:
        have = self.have.get(source)
        return have is None or bool(have[index])

    def useful(self, source: str) -> bool:
        """True if ``source`` holds a chunk that is still missing."""
        have = self.have.get(source)
        return any(not self.done[i] and (have is None or have[i]) for i in range(self.total))

    # -- taking work ---------------------------------------------------------------------
    def _order(self, k: int) -> int:
        """The chunk at position ``k`` of the rotated order."""
        return (k + self.offset) % self.total

    def _pick(self, source: str) -> int | None:
        """The rarest wanted chunk ``source`` holds (ties: first in rotated order)."""
        have = self.have.get(source)
        while self._cursor < self.total and not self.want[self._order(self._cursor)]:
            self._cursor += 1
        if have is None and not self.have:
            return self._order(self._cursor) if self._cursor < self.total else None
        floor = 0 if have is None else 1  # nothing rarer can exist: stop scanning there
        best, best_count = None, 1 << 30
        for k in range(self._cursor, self.total):
            i = self._order(k)
            if self.want[i] and (have is None or have[i]) and self.count[i] < best_count:
                best, best_count = i, self.count[i]
                if best_count <= floor:
                    break
        return best

    def take(self, source: str) -> _Run | None:
        """Next run for ``source``: from the queue, else stolen; None if nothing now."""
        start = self._pick(source)
        if start is not None:
            end = start + 1
            while (end < self.total and end - start < self.run_chunks and self.want[end]
                   and self.holds(source, end)):
                end += 1
            for i in range(start, end):
                self.want[i] = 0
            run = _Run(start, end, source)
            self.inflight.append(run)
            return run
        return self._steal(source) or self._endgame(source)

    def _steal(self, source: str) -> _Run | None:
        """The back half of the largest run in flight that ``source`` can serve."""
        for victim in sorted(self.inflight, key=lambda r: r.next - r.end):
            if victim.end - victim.next < 2:
                break
            mid = victim.next + (victim.end - victim.next) // 2
            if all(self.holds(source, i) for i in range(mid, victim.end)):
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
                    and self.holds(source, index) and not self._covered(index, more_than=1)):
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
            self._cursor = min(self._cursor, min((i - self.offset) % self.total for i in back))
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
