"""Who holds which chunk, and which chunk a source should send next (rarest first).

Full sources hold every chunk; a *partial* source (a peer still downloading the file)
holds the chunks of its ``have`` bitfield. A chunk's availability is how many partial
sources hold it (full sources add the same number to every chunk, so they do not
change the order). A partial source is asked for the rarest missing chunk it holds.

A swarm (``spread``) adds two rules, both so that a capped seeder sends each chunk once
rather than once per downloader:

* Equally rare chunks are chosen at random (BitTorrent does the same): walking in
  order, downloaders that start near each other ask for the same chunks in lockstep.
* While partial sources are known, a full source is asked only for chunks no partial
  source holds (the downloaders fetch the others from each other), and of those only
  the ones this downloader *owns*: rendezvous hashing of (node id, chunk) over the
  swarm's members (this node and the partial sources it knows) gives each chunk one
  owner, the same one in every downloader that knows the same members. A downloader
  fetches the rest from the owner once it has them. Views of the swarm differ for a
  moment as peers are discovered, so a full source idle for ``grace`` seconds takes
  any chunk no partial source holds.
"""

from __future__ import annotations

import hashlib
import random
import time

GRACE = 3.0


def _rank(member: str, index: int) -> bytes:
    return hashlib.blake2b(f"{member}/{index}".encode(), digest_size=8).digest()


class Availability:
    """Partial sources' chunks, per-chunk counts, chunk ownership in a swarm."""

    def __init__(self, total: int, *, spread: bool = False, me: str = "",
                 grace: float = GRACE) -> None:
        self.total = total
        self.spread = spread
        self.me = me
        self.grace = grace
        #: Partial sources' chunks (1 = held); a source not in here holds every chunk.
        self.have: dict[str, bytearray] = {}
        self.count = [0] * total  # partial sources holding each chunk
        self.members: dict[str, str] = {}  # partial source -> its node id
        self.mine = bytearray(b"\x01" * total)  # chunks this downloader fetches from seeds
        self._idle: dict[str, float] = {}  # full source -> since when it got nothing

    def set_have(self, source: str, have: bytearray | None, member: str = "") -> None:
        """Record a source's chunks (None: a full source) and its node id."""
        old = self.have.pop(source, None)
        if old is not None:
            for i in range(self.total):
                self.count[i] -= old[i]
        if have is not None:
            self.have[source] = have
            for i in range(self.total):
                self.count[i] += have[i]
        ids = {s: m for s, m in self.members.items() if s in self.have}
        if have is not None and member:
            ids[source] = member
        if ids != self.members:
            self.members = ids
            self._share_out()

    def _share_out(self) -> None:
        """Recompute which chunks this downloader owns (rendezvous hashing)."""
        everyone = {*self.members.values(), self.me}
        if not self.spread or not self.me or len(everyone) < 2:
            self.mine = bytearray(b"\x01" * self.total)
            return
        for i in range(self.total):
            owner = min(everyone, key=lambda m: _rank(m, i))
            self.mine[i] = owner == self.me

    def holds(self, source: str, index: int) -> bool:
        have = self.have.get(source)
        return have is None or bool(have[index])

    def seeding_rules(self, source: str) -> bool:
        """True if ``source`` is a full source in a swarm with partial sources known."""
        return self.spread and bool(self.have) and source not in self.have

    def may_extend(self, source: str, index: int) -> bool:
        """May a run of ``source`` go on with chunk ``index`` (already wanted)?"""
        if self.seeding_rules(source):
            return not self.count[index] and bool(self.mine[index])
        return self.holds(source, index)

    def pick(self, source: str, want: bytearray) -> int | None:
        """The chunk ``source`` should send next, of those ``want`` marks; None if none."""
        have = self.have.get(source)
        if have is None and not self.have:  # only full sources: lowest index or random
            return self._any(want)
        if not self.seeding_rules(source):
            best, best_count, ties = None, 1 << 30, 0
            for i in range(self.total):
                if want[i] and (have is None or have[i]):
                    c = self.count[i]
                    if c < best_count:
                        best, best_count, ties = i, c, 1
                    elif c == best_count and self.spread:
                        ties += 1
                        if random.randrange(ties) == 0:  # reservoir: uniform among ties
                            best = i
            return best
        now = time.monotonic()
        idle = now - self._idle.setdefault(source, now) >= self.grace
        chosen, seen = None, 0
        for i in range(self.total):
            if want[i] and not self.count[i] and (self.mine[i] or idle):
                seen += 1
                if random.randrange(seen) == 0:
                    chosen = i
        if chosen is not None:
            self._idle.pop(source, None)
        return chosen

    def _any(self, want: bytearray) -> int | None:
        if not self.spread:
            first = want.find(1)
            return None if first < 0 else first
        chosen, seen = None, 0
        for i in range(self.total):
            if want[i]:
                seen += 1
                if random.randrange(seen) == 0:
                    chosen = i
        return chosen
