"""The ``kadshare`` command as a user runs it (a real process), fetching with --from.

These tests need no node: ``get --from HOST:PORT`` names the providers directly, so
interruption, resume, exit codes and destination errors can be driven precisely.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pclient.cli import main
from pclient.download import part_paths
from tests.pclient.cli_runner import KADSHARE, ROOT, run_cli
from tests.pclient.provider import Behaviour


async def wait_for_state(state: Path, tries: int = 600) -> None:
    """Poll (bounded) until the resume state records at least one verified chunk."""
    for _ in range(tries):
        try:
            if int(json.loads(state.read_text())["done"], 16):  # noqa: ASYNC240
                return
        except (OSError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the client never saved resume state")


async def slow_get(make_provider: Any, file_id: str, tmp_path: Path, capture: bool
                   ) -> tuple[Any, Path, asyncio.subprocess.Process]:
    """``kadshare get`` from a slow provider, returned once its resume state exists."""
    prov = await make_provider(Behaviour(delay=0.1))
    state = part_paths(tmp_path, file_id)[1]
    pipe = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(
        *KADSHARE, "get", file_id, "--from", prov.address, "-o", str(tmp_path),
        cwd=ROOT, stdout=pipe, stderr=pipe,
    )
    await wait_for_state(state)
    return prov, state, proc


class TestGetDirect:
    async def test_get_json_has_documented_fields_and_no_progress_when_piped(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        prov = await make_provider()
        out_dir = tmp_path / "dl"
        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(out_dir), "--json")
        assert code == 0, err
        doc = json.loads(out)
        for key in ("file_id", "name", "path", "size", "fetched_bytes", "resumed_bytes",
                    "already_present", "sources", "dropped", "seconds"):
            assert key in doc
        assert doc["file_id"] == file_id and doc["sources"] == {prov.address: doc["size"]}
        assert Path(doc["path"]).read_bytes() == shared_file.read_bytes()  # noqa: ASYNC240

        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(out_dir))
        assert code == 0 and "already here" in out
        assert "\x1b[" not in out and "ETA" not in out  # no live bar when not a terminal

    async def test_ctrl_c_exits_130_then_rerun_resumes_and_verifies(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        prov, state, proc = await slow_get(make_provider, file_id, tmp_path, capture=True)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 130, err
        assert "resume" in err.decode()
        assert state.exists() and not (tmp_path / shared_file.name).exists()
        first_run = prov.bytes_sent

        prov.behaviour.delay = 0.0
        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(tmp_path), "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["resumed_bytes"] > 0
        assert doc["fetched_bytes"] < doc["size"]
        assert prov.bytes_sent - first_run < doc["size"]
        assert (tmp_path / shared_file.name).read_bytes() == shared_file.read_bytes()
        assert not state.exists()

    async def test_kill_9_of_the_client_then_rerun_resumes(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        """The state a killed ``kadshare get`` saved (after syncing its part file) is
        trusted by the rerun without re-hashing; the file still verifies."""
        prov, state, proc = await slow_get(make_provider, file_id, tmp_path, capture=False)
        proc.kill()  # (the next chunk is seconds away: no write is in flight)
        await proc.wait()
        assert "part" in json.loads(state.read_text())
        prov.behaviour.delay = 0.0
        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(tmp_path), "--json", "-v")
        assert code == 0, err
        assert "trusted from the synced state" in err
        doc = json.loads(out)
        assert 0 < doc["resumed_bytes"] and doc["fetched_bytes"] < doc["size"]
        assert (tmp_path / shared_file.name).read_bytes() == shared_file.read_bytes()

    async def test_existing_different_file_is_refused_without_force(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        prov = await make_provider()
        (tmp_path / shared_file.name).write_text("mine")
        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(tmp_path))
        assert code == 1 and "--force" in err and len(err.strip().splitlines()) == 1
        assert (tmp_path / shared_file.name).read_text() == "mine"
        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(tmp_path), "--force")
        assert code == 0
        assert (tmp_path / shared_file.name).read_bytes() == shared_file.read_bytes()

    async def test_every_source_failing_exits_1_with_a_reason_per_source(
        self, make_provider, file_id, tmp_path
    ):
        bad = await make_provider(Behaviour(corrupt_chunks={0}))
        code, out, err = await run_cli("get", file_id, "--from", bad.address,
                                       "--from", "127.0.0.1:1", "-o", str(tmp_path), "--json")
        assert code == 1
        doc = json.loads(out)
        assert doc["exit_code"] == 1
        assert "127.0.0.1:1" in doc["error"] and "corrupt" in doc["error"]


class TestExitCodes:
    """Most cases call ``pclient.cli.main`` (what the console script runs) in-process to save
    process start-ups; one of each kind also runs as a real process."""

    @pytest.mark.parametrize(
        "args",
        [
            ["frobnicate"],
            ["get"],
            ["providers", "not-an-id"],
            ["get", "x" * 64, "--sources", "0"],
            ["get", "ab" * 32, "--timeout", "soon"],
            ["get", "holiday", "--from", "127.0.0.1:1"],
            ["put", "/etc/hostname", "--to", "nowhere"],
        ],
    )
    def test_bad_usage_exits_2(self, args, capsys):
        assert main(args) == 2
        assert "Traceback" not in capsys.readouterr().err

    async def test_bad_usage_exits_2_as_a_process(self):
        code, out, err = await run_cli("frobnicate")
        assert code == 2 and "Usage:" in err and "Traceback" not in err

    @pytest.mark.parametrize("args", [["status"], ["ls"], ["peers"], ["search", "x"],
                                      ["get", "cat.jpg"], ["providers", "ab" * 32]])
    def test_node_unreachable_exits_1_naming_the_url_and_how_to_start_one(self, args, capsys):
        url = "http://127.0.0.1:1"
        assert main([*args, "--node", url]) == 1
        err = capsys.readouterr().err
        assert url in err and "kadshare-node" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1

    async def test_node_unreachable_as_a_process_with_json(self):
        code, out, err = await run_cli("status", "--node", "http://127.0.0.1:1", "--json")
        assert code == 1 and json.loads(out)["exit_code"] == 1
        assert "http://127.0.0.1:1" in json.loads(out)["error"]

    async def test_node_url_that_is_not_a_kadshare_node_exits_1(self, make_provider, capsys):
        prov = await make_provider()
        assert await asyncio.to_thread(main, ["status", "--node", f"http://{prov.address}"]) == 1
        err = capsys.readouterr().err
        assert prov.address in err and "does not answer HTTP" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert await asyncio.to_thread(main, ["status", "--node", "not a url at all"]) == 2
        assert "http://HOST:PORT or HOST:PORT" in capsys.readouterr().err

    def test_reader_going_away_is_not_a_traceback(self):
        proc = subprocess.Popen([*KADSHARE, "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # like `kadshare --help | head -0`
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) in (0, 1) and "Traceback" not in err

    def test_help_exits_0(self, capsys):
        assert main(["--help"]) == 0
        assert "kadshare get" in capsys.readouterr().out


class TestPut:
    async def test_put_uploads_and_reports_the_id(self, make_provider, shared_file, file_id,
                                                  tmp_path):
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        prov = await make_provider(upload_dir=inbox)
        code, out, err = await run_cli("put", str(shared_file), "--to", prov.address, "--json")
        assert code == 0, err
        assert json.loads(out) == {"file_id": file_id, "name": shared_file.name,
                                   "size": shared_file.stat().st_size, "peer": prov.address}
        assert (inbox / shared_file.name).read_bytes() == shared_file.read_bytes()

    async def test_put_to_a_peer_refusing_uploads_exits_1(self, make_provider, shared_file):
        prov = await make_provider()
        code, out, err = await run_cli("put", str(shared_file), "--to", prov.address)
        assert code == 1 and "does not accept uploads" in err

    async def test_put_of_a_missing_file_exits_1(self, tmp_path):
        code, out, err = await run_cli("put", str(tmp_path / "nope"), "--to", "127.0.0.1:1")
        assert code == 1 and "cannot read" in err


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True, timeout=30, check=False,
    )
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs root to mount a tmpfs "
                                 "in a private mount namespace (unshare -m)")


@needs_mount
class TestDestinationFaults:
    """A private mount namespace holds a read-only or tiny tmpfs only for one client run."""

    async def _get_in_mount(self, options: str, file_id: str, address: str,
                            dest: Path) -> tuple[int, str, str]:
        script = (
            f'mount -t tmpfs -o {options} tmpfs "$1" || exit 99; shift; '
            '"$@"; rc=$?; echo "LISTING:$(ls -A "$0")"; exit $rc'
        )
        proc = await asyncio.create_subprocess_exec(
            "unshare", "-m", "sh", "-c", script, str(dest), str(dest), *KADSHARE, "get",
            file_id, "--from", address, "-o", str(dest),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode or 0, out.decode(), err.decode()

    async def test_read_only_destination_is_a_clear_error_and_leaves_no_file(
        self, make_provider, file_id, tmp_path
    ):
        prov = await make_provider()
        dest = tmp_path / "ro"
        dest.mkdir()
        code, out, err = await self._get_in_mount("ro,size=4m", file_id, prov.address, dest)
        assert code == 1, (out, err)
        assert "read-only" in err and "Traceback" not in err
        assert "LISTING:\n" in out or out.rstrip().endswith("LISTING:")

    async def test_full_disk_is_a_clear_error_and_leaves_no_file(
        self, make_provider, file_id, tmp_path
    ):
        prov = await make_provider()
        dest = tmp_path / "tiny"
        dest.mkdir()
        code, out, err = await self._get_in_mount("size=256k", file_id, prov.address, dest)
        assert code == 1, (out, err)
        assert "disk full" in err and "Traceback" not in err
        assert out.rstrip().endswith("LISTING:")


class TestMaxRate:
    def test_bad_rate_is_usage_exit_2(self, file_id, capsys):
        assert main(["get", file_id, "--from", "127.0.0.1:1", "--max-rate", "fast"]) == 2
        assert "--max-rate" in capsys.readouterr().err

    async def test_get_with_max_rate_completes(self, make_provider, shared_file, file_id,
                                               tmp_path):
        prov = await make_provider()
        code, out, err = await run_cli("get", file_id, "--from", prov.address, "-o",
                                       str(tmp_path), "--max-rate", "64M", "--json")
        assert code == 0, err
        assert (tmp_path / shared_file.name).read_bytes() == shared_file.read_bytes()


class TestId:
    """``kadshare id PATH``: a file's id without any node running."""

    def test_prints_the_merkle_id_and_json(self, shared_file, file_id, capsys):
        assert main(["id", str(shared_file)]) == 0
        assert capsys.readouterr().out == f"{file_id}  {shared_file}\n"
        assert main(["id", str(shared_file), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc == {"file_id": file_id, "path": str(shared_file),
                       "size": shared_file.stat().st_size}

    def test_empty_file_has_the_documented_id(self, tmp_path, capsys):
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        assert main(["id", str(empty)]) == 0
        assert capsys.readouterr().out.split()[0] == (
            "c6c0aa07f27493d2f2e5cff56c890a353a20086d6c25ec825128e12ae752b2d9")

    def test_missing_file_or_folder_exits_1_with_one_line(self, tmp_path, capsys):
        assert main(["id", str(tmp_path / "nope")]) == 1
        assert "does not exist" in capsys.readouterr().err
        assert main(["id", str(tmp_path)]) == 1
        assert "is a folder" in capsys.readouterr().err
