"""Fuzzing what the client takes from strangers: the file name a provider or record gives.

A download's final name comes from the network (``GetInfo`` or a search hit). Property:
whatever the name, the file lands directly in the chosen folder under a name the file
system accepts (one component, not hidden, at most 255 bytes; the part and state files
are named by the file id, not by this name), never elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from pclient.download import safe_name
from tests.security.fuzzing import budget

pytestmark = budget()
DEST = Path("/tmp/kadshare-dest")

names = st.text(max_size=600) | st.sampled_from(
    ["..", "../../etc/passwd", "/etc/passwd", "a/../../b", "..\\..\\x", ".bashrc", "\x00",
     " ", "ok.txt", "é" * 255, "😀" * 100, "a" * 300, "dir/", "C:\\Windows\\x.dll"]
)


class TestSafeName:
    @given(names)
    @example("é" * 200)
    def test_final_path_stays_in_the_folder(self, name: str) -> None:
        base = safe_name(name, "fallback-id")
        final = DEST / base
        assert final.parent == DEST
        assert base not in ("", ".", "..") and not base.startswith(".")
        assert "/" not in base and "\x00" not in base
        assert len(base.encode("utf-8", "surrogatepass")) <= 255, len(base.encode())

    @given(st.text(min_size=1, max_size=400), st.sampled_from([".bin", ".jpg", ".tar.gz"]))
    def test_a_long_name_keeps_its_extension(self, stem: str, ext: str) -> None:
        base = safe_name(stem + ext, "fallback-id")
        if base != "fallback-id":
            assert base.endswith(ext)
