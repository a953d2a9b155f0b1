"""The ``kadshare`` command speaking to a person: usage errors, per-command help, node
addresses, upload mistakes, and the small print of downloads and tables."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kadcommon.units import human_duration
from pclient.cli import main
from pclient.download import DownloadProgress
from pclient.render import ProgressBar
from tests.pclient.cli_runner import run_cli, run_main
from tests.pclient.netutil import PLAGE, Net, start_net
from tests.pclient.provider import FaultyProvider


class TestUsage:
    @pytest.mark.parametrize("args, says", [
        (["get"], "kadshare get: missing FILE"),
        (["get", "a", "b"], "kadshare get: unexpected argument 'b'"),
        (["status", "--bogus"], "kadshare status: unknown option --bogus"),
        (["get", "x", "--sources"], "kadshare get: --sources requires argument"),
        (["put", "x"], "kadshare put: missing --to"),
        (["search"], "kadshare search: missing WORDS"),
        (["frobnicate"], "kadshare: unknown command 'frobnicate'"),
    ])
    def test_mistakes_are_named_without_parser_internals(self, args, says, capsys):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.splitlines()[0] == says or err.startswith(says), err
        assert "Argument(" not in err and "Option(" not in err and "Warning" not in err
        assert "Traceback" not in err

    def test_the_usage_shown_is_that_of_the_command(self, capsys):
        assert main(["status", "--bogus"]) == 2
        err = capsys.readouterr().err
        assert "kadshare status [--node URL]" in err and "kadshare get" not in err

    @pytest.mark.parametrize("command", ["get", "put", "search", "status"])
    def test_command_help_shows_only_that_command(self, command, capsys):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert f"kadshare {command}" in out
        others = {"search", "providers", "get", "put", "ls", "peers", "status"} - {command}
        assert not any(f"kadshare {o} " in out for o in others), out
        assert ("--sources" in out) == (command == "get")
        assert ("--to ADDR" in out) == (command == "put")

    def test_version_and_full_help(self, capsys):
        assert main(["--version"]) == 0
        assert capsys.readouterr().out.startswith("kadshare ")
        assert main(["--help"]) == 0
        out = capsys.readouterr().out
        assert all(f"kadshare {c}" in out for c in ("search", "get", "put", "status"))


@pytest.fixture
async def lone(tmp_path: Path) -> AsyncIterator[Net]:
    """One peer that accepts uploads without a token (and at most 200 kB of them)."""
    net = await start_net(tmp_path, [], accept_uploads=True, open_uploads=True,
                          max_upload=200_000)
    try:
        yield net
    finally:
        await net.stop()


class TestNodeAddress:
    async def test_host_port_is_accepted_like_every_other_address_flag(self, lone, capsys):
        port = lone.nodes[0].info["rest_port"]
        code, out, err = await run_main(capsys, "status", "--node", f"127.0.0.1:{port}",
                                        "--json")
        assert code == 0, err
        assert json.loads(out)["rest_port"] == port

    async def test_https_against_a_plain_http_node_says_so(self, lone, capsys):
        port = lone.nodes[0].info["rest_port"]
        code, out, err = await run_main(capsys, "status", "--node", f"https://127.0.0.1:{port}")
        assert code == 1
        assert "plain HTTP" in err and f"--node http://127.0.0.1:{port}" in err
        assert len(err.strip().splitlines()) == 1

    @pytest.mark.parametrize("value", ["not a url at all", "ftp://x:1", "127.0.0.1:99999",
                                       "127.0.0.1"])
    def test_a_malformed_node_is_bad_usage(self, value, capsys):
        assert main(["status", "--node", value]) == 2
        err = capsys.readouterr().err
        assert "--node" in err and "Traceback" not in err


class TestPutMistakes:
    async def test_put_to_the_rest_port_says_it_looks_like_one(self, lone, tmp_path):
        src = tmp_path / "note.txt"
        src.write_text("hello\n")
        port = lone.nodes[0].info["rest_port"]
        code, out, err = await run_cli("put", str(src), "--to", f"127.0.0.1:{port}")
        assert code == 1
        assert "REST port" in err and "grpc_port" in err
        assert "failed to connect to all addresses" not in err

    async def test_refusals_speak_without_grpc_wording(self, lone, tmp_path):
        big = tmp_path / "big.bin"
        big.write_bytes(b"x" * 300_000)
        code, out, err = await run_cli("put", str(big), "--to", lone.grpc(0))
        assert code == 1 and "exceeds this peer's limit" in err
        assert "overloaded" not in err and "message too large" not in err

    async def test_re_uploading_identical_content_is_a_no_op(self, lone, tmp_path):
        src = tmp_path / "minutes.txt"
        src.write_text("we agreed\n" * 1000)
        first = await run_cli("put", str(src), "--to", lone.grpc(0), "--json")
        again = await run_cli("put", str(src), "--to", lone.grpc(0), "--json")
        assert first[0] == 0, first[2]
        assert again[0] == 0, again[2]
        assert json.loads(again[1])["file_id"] == json.loads(first[1])["file_id"]
        assert (lone.tmp / "share0" / "minutes.txt").read_bytes() == src.read_bytes()  # noqa: ASYNC240
        # different content under the same name is still refused
        src.write_text("we did not agree\n")
        code, out, err = await run_cli("put", str(src), "--to", lone.grpc(0))
        assert code == 1 and "already exists" in err


class TestSmallPrint:
    async def test_an_empty_file_is_not_reported_as_a_0_mb_s_transfer(self, tmp_path):
        empty = tmp_path / "empty.txt"
        empty.write_bytes(b"")
        prov = await FaultyProvider(empty).start()
        try:
            code, out, err = await run_cli("get", prov.file_id, "--from", prov.address, "-o",
                                           str(tmp_path / "dl"))
        finally:
            await prov.stop()
        assert code == 0, err
        assert "empty file" in out
        assert "0 source" not in out and "MB/s" not in out
        assert (tmp_path / "dl" / "empty.txt").read_bytes() == b""

    def test_durations_read_like_a_person_says_them(self):
        assert [human_duration(s) for s in (42, 3546, 4000, 7200, 200_000, -5)] == [
            "42 s", "59 min", "1 h 6 min", "2 h", "2 d 7 h", "0 s"]

    async def test_expires_in_is_a_human_duration(self, photo_net, capsys):
        net: Any = photo_net
        code, out, err = await run_main(capsys, "providers", net.photo_id, "--node", net.url)
        assert code == 0, err
        rows = [line for line in out.splitlines() if PLAGE in line or "copy" in line]
        assert len(rows) == 3
        for row in rows:
            assert re.search(r"\d+ (min|h|d)\b", row), row
            assert not re.search(r"\b\d{3,} s\b", row), row

    def test_a_long_name_never_pushes_the_figures_off_the_line(self):
        out = io.StringIO()
        name = "a very long holiday video name " * 10 + ".mp4"
        bar = ProgressBar(name, enabled=True, out=out)
        with bar:
            bar.download(DownloadProgress(name=name, total=8 << 20, done=0, fetched=0,
                                          resumed=0, active_sources=2))
            bar.download(DownloadProgress(name=name, total=8 << 20, done=3 << 20,
                                          fetched=3 << 20, resumed=0, active_sources=2))
        last = [line for line in out.getvalue().splitlines() if line.strip()][-1]
        assert "3.0/8.0 MiB" in last and "ETA" in last and "…" in last, last
        assert len(last) <= 80


class TestReadme:
    def test_lists_every_rest_call_and_says_how_to_run_the_commands(self):
        from pserver.openapi import openapi_document

        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
        for path, calls in openapi_document()["paths"].items():
            for method in calls:
                if method in ("get", "post", "delete"):
                    assert f"{method.upper()} {path}" in readme, (method, path)
        assert "source .venv/bin/activate" in readme and ".venv/bin/kadshare" in readme
