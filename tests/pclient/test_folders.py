"""Folders through real peers: a shared folder is fetched byte-identical, by name and by link."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from kadcommon.manifest import FileEntry, Manifest, ManifestError
from pclient import Client
from pclient.folders import FolderError, _prepare
from pserver.config import NodeConfig
from pserver.node import Node
from tests.pclient.cli_runner import run_cli
from tests.pclient.netutil import until

FOLDER = "Vacances été"


def make_tree(root: Path) -> None:
    rng = random.Random(7)
    (root / "sous dossier" / "profond").mkdir(parents=True)
    (root / "dossier vide").mkdir()
    (root / "a.txt").write_bytes(b"bonjour\n")
    (root / "copie de a.txt").write_bytes(b"bonjour\n")  # same bytes, second name
    (root / "sous dossier" / "b.bin").write_bytes(rng.randbytes(1024 * 1024 + 333))
    (root / "sous dossier" / "profond" / "vide.txt").write_bytes(b"")
    (root / "sous dossier" / "profond" / "ünïcødé ☃.md").write_bytes("ça va ☃\n".encode())


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (None for a folder), hidden entries left out."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for d in dirnames:
            found[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            if not f.startswith("."):
                full = os.path.join(dirpath, f)
                found[os.path.relpath(full, root)] = Path(full).read_bytes()
    return found


async def test_folder_round_trips_by_name_and_by_link(tmp_path: Path) -> None:
    share = tmp_path / "share"
    make_tree(share / FOLDER)
    (tmp_path / "empty").mkdir()
    nodes: list[Node] = []
    try:
        nodes.append(await Node.start(NodeConfig(data_dir=tmp_path / "d0", share_dir=share)))
        boot = (("127.0.0.1", nodes[0].info["dht_port"]),)
        nodes.append(await Node.start(NodeConfig(data_dir=tmp_path / "d1",
                                                 share_dir=tmp_path / "empty", bootstrap=boot)))
        nodes.append(await Node.start(NodeConfig(data_dir=tmp_path / "d2",
                                                 share_dir=tmp_path / "empty")))  # alone
        url = [f"http://127.0.0.1:{n.info['rest_port']}" for n in nodes]
        async with Client(url[1], timeout=30) as client:
            async def found() -> bool:
                hits = await client.search("vacances")
                return any(h["name"] == FOLDER + ".kadfolder" for h in hits)
            await until(found, "the folder's manifest searchable by its name")

        code, out, err = await run_cli("get", FOLDER + ".kadfolder", "--node", url[1],
                                       "-o", str(tmp_path / "out1"), "--json", "--timeout", "10")
        assert code == 0, err
        assert json.loads(out)["files"] == 5
        assert tree(tmp_path / "out1" / FOLDER) == tree(share / FOLDER)

        # run again: every file is already there and verified (resume of a whole folder)
        code, out, err = await run_cli("get", FOLDER + ".kadfolder", "--node", url[1],
                                       "-o", str(tmp_path / "out1"), "--json", "--timeout", "10")
        assert code == 0, err
        assert json.loads(out)["already_present"] == 5 and json.loads(out)["fetched_bytes"] == 0

        code, out, err = await run_cli("link", FOLDER + ".kadfolder", "--node", url[0])
        assert code == 0, err
        assert out.startswith("kadshare:folder?")
        code, out, err = await run_cli("get", out.strip(), "--node", url[2],
                                       "-o", str(tmp_path / "out2"), "--json", "--timeout", "10")
        assert code == 0, err
        assert tree(tmp_path / "out2" / FOLDER) == tree(share / FOLDER)
    finally:
        for node in nodes:
            await node.stop(graceful=False)


@pytest.mark.parametrize("path", ["../evil", "/etc/evil", "a/../../evil"])
def test_manifest_paths_leaving_the_output_are_refused(tmp_path: Path, path: str) -> None:
    manifest = Manifest("f", (FileEntry(path, 1, "ab" * 32),))
    with pytest.raises(ManifestError):
        _prepare(tmp_path, manifest)
    assert os.listdir(tmp_path) == [] or os.listdir(tmp_path) == ["f"]
    assert not (tmp_path.parent / "evil").exists()


def test_a_link_planted_in_the_output_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "out" / "f").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "f" / "sub")
    manifest = Manifest("f", (FileEntry("sub/x", 1, "ab" * 32),))
    with pytest.raises(FolderError, match="outside"):
        _prepare(tmp_path / "out", manifest)


async def test_put_folder_then_get_it_from_another_peer(tmp_path: Path) -> None:
    """`kadshare put DIR` sends the tree to a peer that accepts uploads; the peer shares it
    as one folder, and another peer's user gets it back byte-identical."""
    local = tmp_path / "local" / FOLDER
    make_tree(local)
    (local / ".cache").mkdir()
    (local / ".cache" / "secret").write_bytes(b"left out")  # hidden: not sent
    for name in ("up", "empty"):
        (tmp_path / name).mkdir()
    nodes: list[Node] = []
    try:
        nodes.append(await Node.start(NodeConfig(data_dir=tmp_path / "d0",
                                                 share_dir=tmp_path / "up", accept_uploads=True)))
        boot = (("127.0.0.1", nodes[0].info["dht_port"]),)
        nodes.append(await Node.start(NodeConfig(data_dir=tmp_path / "d1",
                                                 share_dir=tmp_path / "empty", bootstrap=boot)))
        to = f"127.0.0.1:{nodes[0].info['grpc_port']}"
        token = nodes[0].token

        code, out, err = await run_cli("put", str(local), "--to", to, "--json")
        assert code == 1 and "token" in err  # uploads need the peer's token
        code, out, err = await run_cli("put", str(local), "--to", to, "--token", token, "--json")
        assert code == 0, err
        reply = json.loads(out)
        assert reply["files"] == 5 and reply["shared_as"] == FOLDER + ".kadfolder"
        assert reply["skipped"] == [".cache/"]
        assert tree(tmp_path / "up" / FOLDER) == tree(local)  # empty folder included
        assert not (tmp_path / "up" / FOLDER / ".cache").exists()
        # again: the peer holds every file already, so the put resumes without failing
        code, out, err = await run_cli("put", str(local), "--to", to, "--token", token, "--json")
        assert code == 0, err

        url = f"http://127.0.0.1:{nodes[1].info['rest_port']}"
        async with Client(url, timeout=30) as client:
            async def found() -> bool:
                hits = await client.search("vacances")
                return any(h["name"] == FOLDER + ".kadfolder" for h in hits)
            await until(found, "the uploaded folder searchable by its name")
        code, out, err = await run_cli("get", FOLDER + ".kadfolder", "--node", url,
                                       "-o", str(tmp_path / "out"), "--json", "--timeout", "10")
        assert code == 0, err
        assert tree(tmp_path / "out" / FOLDER) == tree(local)
    finally:
        for node in nodes:
            await node.stop(graceful=False)
