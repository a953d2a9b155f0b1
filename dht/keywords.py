"""File-name normalisation for keyword search.

NFKD, strip combining marks (accents), casefold, split on anything that is not a letter
or digit, drop words shorter than 2 characters and a small stop list.  Names and
queries go through the same function, so "Été_Photos.JPG" and "ete photos" meet.
"""

from __future__ import annotations

import re
import unicodedata

MIN_WORD = 2
MAX_WORD = 48

STOP_WORDS = frozenset(
    """
    a an and are as at be by de del der des die das du el en et for from in is it la le
    les of on or the to und with y
    """.split()
)

_SPLIT = re.compile(r"[\W_]+", re.UNICODE)


def _fold(text: str) -> str:
    """Casefold, NFKD, drop combining marks; repeated until nothing changes.

    Casefolding first matters: some combining marks fold to letters (Greek
    ypogegrammeni U+0345 becomes iota), so "ᾀ" and its casefold must meet.
    """
    for _ in range(4):
        decomposed = unicodedata.normalize("NFKD", text.casefold())
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        if folded == text:
            break
        text = folded
    return text


def normalize_words(text: str, limit: int | None = None) -> list[str]:
    """Distinct normalised words of ``text`` in first-seen order (at most ``limit``)."""
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    words: list[str] = []
    seen: set[str] = set()
    for raw in _SPLIT.split(_fold(text)):
        word = raw[:MAX_WORD]
        if len(word) < MIN_WORD or word in STOP_WORDS or word in seen:
            continue
        # a truncated or folded word must itself be a fixed point of the normaliser
        if _SPLIT.search(word) or _fold(word) != word:
            continue
        seen.add(word)
        words.append(word)
        if limit is not None and len(words) >= limit:
            break
    return words


def is_normal_word(word: object) -> bool:
    """True if ``word`` is exactly one word as ``normalize_words`` produces it."""
    return isinstance(word, str) and normalize_words(word) == [word]
