"""Fuzzing what the client takes from strangers: the file name a provider or record gives.

A download's final name comes from the network (``GetInfo`` or a search hit). Property:
whatever the name, the file lands directly in the chosen folder under a name the file
system accepts (one component, not hidden, short enough in bytes for its
.part companions), never elsewhere.
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
        # the download also creates NAME.part, NAME.part.state and NAME.part.state.tmp
        longest = base + ".part.state.tmp"
        assert len(longest.encode("utf-8", "surrogatepass")) <= 255, len(longest.encode())
