"""What lookups return to callers: search hits pooled from keyword records, and how many
peers a call asked and heard from (kept apart from ``node.py``, which runs the lookups)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .keywords import normalize_words
from .lookup import LookupResult
from .records import KeywordRecord


@dataclass(frozen=True)
class SearchHit:
    """One file matching every word of a search."""

    file_id: str
    name: str
    size: int
    providers: int


@dataclass
class LookupStats:
    """How many peers the lookups of one call asked and how many answered (up to k each).

    Pass one to ``search`` or ``find_providers`` to tell "nothing matches" (peers
    answered) from "nobody answered" (``answered == 0``); the result alone cannot.
    """

    asked: int = 0
    answered: int = 0


def count_lookups(stats: LookupStats | None, results: list[LookupResult]) -> None:
    """Add the peers ``results`` asked and heard from to ``stats`` (if given)."""
    if stats is not None:
        stats.asked += sum(r.queried for r in results)
        stats.answered += sum(len(r.closest) for r in results)


def search_hits(results: list[LookupResult], words: list[str]) -> list[SearchHit]:
    """Files whose keyword entries (from any word's key) carry a name with all ``words``,
    most providers first."""
    wanted = set(words)
    matching: dict[str, list[KeywordRecord]] = {}
    for res in results:
        for rec in res.positive():
            if isinstance(rec, KeywordRecord) and wanted <= set(normalize_words(rec.name)):
                matching.setdefault(rec.file_id, []).append(rec)
    hits = []
    for fid, entries in matching.items():
        name = Counter(e.name for e in entries).most_common(1)[0][0]
        size = Counter(e.size for e in entries).most_common(1)[0][0]
        providers = len({e.node_id for e in entries})
        hits.append(SearchHit(file_id=fid, name=name, size=size, providers=providers))
    hits.sort(key=lambda h: (-h.providers, h.name, h.file_id))
    return hits
