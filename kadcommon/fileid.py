"""File ids (64 hex characters) and the short prefixes people type instead.

Tables show the first 12 characters of an id; any unique prefix of at least
``MIN_PREFIX_LEN`` hex characters is accepted wherever an id is, resolved as git resolves
abbreviated commits: against the ids one knows, one match wins, several are listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FILE_ID_LEN = 64
MIN_PREFIX_LEN = 8
_HEX = re.compile(r"[0-9a-fA-F]+")


class FileIdError(ValueError):
    """Text that is neither a file id nor a usable prefix; the message says why."""


class UnknownPrefix(LookupError):
    """No known id starts with the prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        super().__init__(
            f"no file id known here starts with {prefix}; give all {FILE_ID_LEN} characters "
            "or find the file first (search, ls)"
        )


class AmbiguousPrefix(LookupError):
    """Several known ids start with the prefix; ``candidates`` are the full ids, sorted."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        self.prefix = prefix
        self.candidates = candidates
        super().__init__(
            f"{len(candidates)} file ids start with {prefix}; give more characters, e.g. "
            + ", ".join(candidates)
        )


def is_file_id(text: object) -> bool:
    """True for exactly 64 hex characters (either case)."""
    return isinstance(text, str) and len(text) == FILE_ID_LEN and bool(_HEX.fullmatch(text))


def is_id_prefix(text: object) -> bool:
    """True for 8 to 64 hex characters: a whole id or a prefix worth resolving."""
    return (isinstance(text, str) and MIN_PREFIX_LEN <= len(text) <= FILE_ID_LEN
            and bool(_HEX.fullmatch(text)))


def normalise_file_id(text: object) -> str:
    """The lowercase id, or FileIdError saying what an id looks like."""
    if not is_file_id(text):
        raise FileIdError(
            f"{str(text)[:80]!r} is not a file id: expected {FILE_ID_LEN} hex characters"
        )
    return str(text).lower()


def normalise_prefix(text: object) -> str:
    """The lowercase id or prefix (8..64 hex), or FileIdError saying what is accepted."""
    if not is_id_prefix(text):
        raise FileIdError(
            f"{str(text)[:80]!r} is not a file id: expected {FILE_ID_LEN} hex characters or "
            f"a unique prefix of at least {MIN_PREFIX_LEN}"
        )
    return str(text).lower()


def resolve_prefix(prefix: str, known: Iterable[str]) -> str:
    """The one id of ``known`` starting with ``prefix`` (a whole id is returned as is).

    Raises FileIdError for malformed text, UnknownPrefix for no match and
    AmbiguousPrefix (listing every match) for several.
    """
    prefix = normalise_prefix(prefix)
    if len(prefix) == FILE_ID_LEN:
        return prefix
    matches = sorted({k.lower() for k in known if k.lower().startswith(prefix)})
    if not matches:
        raise UnknownPrefix(prefix)
    if len(matches) > 1:
        raise AmbiguousPrefix(prefix, matches)
    return matches[0]
