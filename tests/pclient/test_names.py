"""Which name a download is saved under, where its resume state lives, and long names.

The same bytes are shared under different names by different providers, as happens when
friends copy and rename a photo. The saved name must not depend on who answers first,
and an interrupted download must resume whatever name or source the rerun uses.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pclient.download import output_path, part_paths, pick_name, safe_name
from tests.pclient.cli_runner import KADSHARE, ROOT, run_cli
from tests.pclient.netutil import COPY, PLAGE
from tests.pclient.provider import Behaviour, FaultyProvider
from tests.pclient.test_cli_direct import wait_for_state


async def providers_named(tmp_path: Path, data: bytes, names: list[str],
                          behaviour: Behaviour | None = None) -> list[FaultyProvider]:
    """One test provider per name, each serving ``data`` under that name."""
    started = []
    for i, name in enumerate(names):
        path = tmp_path / f"prov{i}.bin"
        path.write_bytes(data)
        started.append(await FaultyProvider(path, behaviour=behaviour, name=name).start())
    return started


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


class TestSavedNameWithFrom:
    async def test_majority_name_wins_whoever_answers_first(self, shared_file, file_id,
                                                            tmp_path):
        data = shared_file.read_bytes()
        provs = await providers_named(tmp_path, data, [COPY, PLAGE, PLAGE])
        try:
            # the odd one out is listed (and answers) first
            code, out, err = await run_cli(
                "get", file_id, *(a for p in provs for a in ("--from", p.address)),
                "-o", str(tmp_path / "dl"), "--json")
        finally:
            for p in provs:
                await p.stop()
        assert code == 0, err
        assert json.loads(out)["name"] == PLAGE
        assert listing(tmp_path / "dl") == [PLAGE]

    async def test_interrupted_with_one_source_resumes_from_another_name(
        self, shared_file, file_id, tmp_path
    ):
        data = shared_file.read_bytes()
        slow, other = await providers_named(tmp_path, data, [COPY, PLAGE],
                                            behaviour=Behaviour(delay=0.1))
        dest = tmp_path / "dl"
        try:
            proc = await asyncio.create_subprocess_exec(
                *KADSHARE, "get", file_id, "--from", slow.address, "-o", str(dest),
                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            await wait_for_state(part_paths(dest, file_id)[1])
            proc.kill()
            await proc.wait()
            other.behaviour.delay = 0.0
            code, out, err = await run_cli("get", file_id, "--from", other.address, "-o",
                                           str(dest), "--json")
        finally:
            for p in (slow, other):
                await p.stop()
        assert code == 0, err
        doc = json.loads(out)
        assert doc["resumed_bytes"] > 0 and doc["fetched_bytes"] < doc["size"]
        assert other.bytes_sent < len(data)
        # one file, under the second run's name; no orphaned part or state file
        assert listing(dest) == [PLAGE]
        assert (dest / PLAGE).read_bytes() == data

    async def test_output_may_be_a_file_path(self, make_provider, shared_file, file_id,
                                             tmp_path):
        prov = await make_provider()
        target = tmp_path / "new folder" / "beach.jpg"
        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(target), "--json")
        assert code == 0, err
        assert json.loads(out)["path"] == str(target)
        assert target.read_bytes() == shared_file.read_bytes()
        assert listing(target.parent) == ["beach.jpg"]
        # the same again: already there, and no part file is left behind
        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(target))
        assert code == 0 and "already here" in out
        assert listing(target.parent) == ["beach.jpg"]


class TestNameRules:
    def test_pick_name_is_the_majority_and_ties_are_stable(self):
        assert pick_name(["b.jpg", "a.jpg", "b.jpg"]) == "b.jpg"
        assert pick_name(["b.jpg", "a.jpg"]) == pick_name(["a.jpg", "b.jpg"]) == "a.jpg"
        assert pick_name(["", ""]) == ""

    @pytest.mark.parametrize("ext", [".bin", ".tar.gz", ".JPG", ".mp4"])
    @pytest.mark.parametrize("stem", ["a" * 248, "é" * 130, "😀" * 70],
                             ids=["ascii", "accents", "emoji"])
    def test_long_names_keep_their_extension(self, stem, ext):
        name = safe_name(stem + ext, "fallback")
        assert name.endswith(ext)
        assert len(name.encode()) <= 255
        assert name[: -len(ext)] and stem.startswith(name[: -len(ext)])

    def test_a_short_name_is_kept_whole(self):
        assert safe_name("x" * 251 + ".bin", "f") == "x" * 251 + ".bin"

    def test_output_path_rules(self, tmp_path):
        (tmp_path / "dir.d").mkdir()
        (tmp_path / "old.txt").write_text("x")
        assert output_path(tmp_path / "dir.d", "a.bin", "f") == tmp_path / "dir.d" / "a.bin"
        assert output_path(tmp_path / "old.txt", "a.bin", "f") == tmp_path / "old.txt"
        assert output_path(tmp_path / "new.jpg", "a.bin", "f") == tmp_path / "new.jpg"
        assert output_path(tmp_path / "newdir", "a.bin", "f") == tmp_path / "newdir" / "a.bin"
        assert output_path(f"{tmp_path / 'x.y'}/", "a.bin", "f") == tmp_path / "x.y" / "a.bin"

    @pytest.mark.parametrize("length", [248, 300])
    async def test_a_long_name_is_saved_with_its_extension(self, shared_file, file_id,
                                                           tmp_path, length):
        name = "r" * (length - 4) + ".bin"
        (prov,) = await providers_named(tmp_path, shared_file.read_bytes(), [name])
        try:
            code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                           str(tmp_path / "dl"), "--json")
        finally:
            await prov.stop()
        assert code == 0, err
        saved = json.loads(out)["name"]
        assert saved == (name if length <= 255 else "r" * 251 + ".bin")
        assert listing(tmp_path / "dl") == [saved]


class TestSavedNameOnTheNetwork:
    async def test_get_by_name_saves_that_name_and_by_id_the_majority_name(self, photo_net):
        net: Any = photo_net
        by_name, by_id = await asyncio.gather(
            run_cli("get", PLAGE, "--node", net.url, "-o", str(net.tmp / "a"), "--json"),
            run_cli("get", net.photo_id, "--node", net.url, "-o", str(net.tmp / "b"), "--json"),
        )
        assert by_name[0] == 0, by_name[2]
        assert json.loads(by_name[1])["name"] == PLAGE
        assert (net.tmp / "a" / PLAGE).read_bytes() == net.photo
        assert by_id[0] == 0, by_id[2]
        assert json.loads(by_id[1])["name"] == COPY
        assert listing(net.tmp / "b") == [COPY]
