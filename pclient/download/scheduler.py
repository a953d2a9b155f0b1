"""Which chunk each source fetches next: runs, work stealing and an endgame."""

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
    """Shared queue of missing chunks, in-flight runs, work stealing and an endgame."""

    def __init__(self, total_chunks: int, done: bytearray, run_chunks: int) -> None:
        self.total = total_chunks
        self.done = done
        self.run_chunks = max(1, run_chunks)
        self.pending: list[int] = [i for i in range(total_chunks) if not done[i]]
        self.pending.reverse()  # pop() from the end gives the lowest index
        self.inflight: list[_Run] = []
        self.remaining = len(self.pending)
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def complete(self) -> bool:
        return self.remaining == 0

    def take(self, source: str) -> _Run | None:
        """Next run for ``source``: from the queue, else stolen; None if nothing now."""
        while self.pending and self.done[self.pending[-1]]:
            self.pending.pop()
        if self.pending:
            start = self.pending.pop()
            end = start + 1
            while self.pending and self.pending[-1] == end and end - start < self.run_chunks:
                self.pending.pop()
                end += 1
            run = _Run(start, end, source)
            self.inflight.append(run)
            return run
        victim = max(self.inflight, key=lambda r: r.end - r.next, default=None)
        if victim is not None and victim.end - victim.next >= 2:
            mid = victim.next + (victim.end - victim.next) // 2
            run = _Run(mid, victim.end, source)
            victim.end = mid
            self.inflight.append(run)
            log.debug("%s steals chunks %d-%d from %s", source, mid, run.end - 1, victim.source)
            return run
        return self._endgame(source)

    def _endgame(self, source: str) -> _Run | None:
        """Nothing to take or split: fetch a copy of a chunk another source still owes.

        The first verified copy counts; once every chunk is in, the download ends and the
        slow source's stream is cancelled, so one stalling source cannot hold up the end.
        """
        for run in self.inflight:
            index = run.next
            if (run.source != source and index < run.end and not self.done[index]
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
                if not self.done[i] and not self._covered(i)]
        if back:
            self.pending.extend(back)
            self.pending.sort(reverse=True)
            self.notify()

    def chunk_done(self, index: int) -> None:
        if not self.done[index]:
            self.done[index] = 1
            self.remaining -= 1
            if self.remaining == 0:
                self.notify()

    async def wait_change(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def notify(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()
