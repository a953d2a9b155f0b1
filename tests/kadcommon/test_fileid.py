"""File ids and the prefixes people type: resolved like git resolves abbreviated commits."""

from __future__ import annotations

import pytest

from kadcommon.fileid import (
    AmbiguousPrefix,
    FileIdError,
    UnknownPrefix,
    is_file_id,
    is_id_prefix,
    resolve_prefix,
)


class TestResolvePrefix:
    IDS = ["ab" * 32, "abcd" + "0" * 60, "ff" * 32]

    def test_unique_prefix_whole_id_and_case(self):
        assert resolve_prefix("FFFFFFFF", self.IDS) == "ff" * 32
        assert resolve_prefix("abcd0000", self.IDS) == "abcd" + "0" * 60
        assert resolve_prefix("12" * 32, self.IDS) == "12" * 32  # whole ids need no match

    def test_ambiguous_lists_every_full_id(self):
        with pytest.raises(AmbiguousPrefix) as info:
            resolve_prefix("abababab", ["abababab" + "1" * 56, "abababab" + "2" * 56])
        assert info.value.candidates == ["abababab" + "1" * 56, "abababab" + "2" * 56]

    def test_unknown_and_malformed(self):
        with pytest.raises(UnknownPrefix):
            resolve_prefix("12345678", self.IDS)
        for bad in ("abcd", "abcdefg!", "a" * 65, ""):
            with pytest.raises(FileIdError):
                resolve_prefix(bad, self.IDS)
        assert is_id_prefix("abcdef12") and not is_id_prefix("abcdef1")
        assert is_file_id("AB" * 32) and not is_file_id("ab" * 31)
