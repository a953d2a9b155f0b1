"""``kadshare-node`` as a user runs it: real subprocesses, signals, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pserver.cli import UsageError, build_config, main, parse_address, parse_size
from pserver.launch import NodeProcess, NodeSpec

START_TIMEOUT = 60.0
SCRIPT = str(Path(sys.executable).parent / "kadshare-node")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
        env={**os.environ, **(env or {})},
    )


def start(tmp: Path, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
    """The node as a user starts it (``--host`` left to the environment)."""
    spec = NodeSpec(data=tmp / "data", host=None, extra=args, env={**os.environ, **(env or {})})
    return NodeProcess.launch(spec, stdout=tmp / "stdout", stderr=tmp / "stderr",
                              timeout=START_TIMEOUT)


class TestUsage:
    @pytest.mark.parametrize(
        "args",
        [["--bogus"], ["--dht-port", "abc"], ["--rest-port", "70000"], ["--bootstrap", "nohost"],
         ["--bootstrap", "h:0"], ["--max-upload", "lots"], ["--log-level", "chatty"], ["extra"],
         ["--max-upload-rate", "fast"], ["--max-upload-slots", "0"],
         ["--max-upload-slots", "4/x"]],
    )
    def test_bad_flags_exit_2_with_a_message(self, args: list[str]) -> None:
        done = run_cli(*args)
        assert done.returncode == 2
        assert "kadshare-node" in done.stderr and "Traceback" not in done.stderr
        assert "Usage:" in done.stderr
        assert done.stdout == ""

    def test_unreadable_share_is_one_line_exit_2(self, tmp_path: Path) -> None:
        done = run_cli("--share", str(tmp_path / "missing"), "--data", str(tmp_path / "d"),
                       "--dht-port", "0", "--grpc-port", "0", "--rest-port", "0")
        assert done.returncode == 2
        errors = [line for line in done.stderr.splitlines() if "kadshare-node:" in line]
        assert len(errors) == 1 and "missing" in errors[0]
        assert "Traceback" not in done.stderr

    def test_help_and_version(self) -> None:
        done = run_cli("--help")
        assert done.returncode == 0
        for flag in ("--share DIR", "--data DIR", "--host ADDR", "--dht-port N", "--grpc-port N",
                     "--rest-port N", "--bootstrap HOST:PORT", "--accept-uploads",
                     "--max-upload BYTES", "--log-level LEVEL"):
            assert flag in done.stdout
        assert main(["--version"]) == 0
        assert main(["--no-such-flag"]) == 2
        version = run_cli("--version")
        assert version.returncode == 0 and version.stdout.startswith("kadshare-node ")


class TestConfigSources:
    def test_flags_win_over_environment(self) -> None:
        env = {
            "KADSHARE_REST_PORT": "9001", "KADSHARE_DHT_PORT": "9002",
            "KADSHARE_BOOTSTRAP": "10.0.0.1:4000, [::1]:4001", "KADSHARE_ACCEPT_UPLOADS": "yes",
            "KADSHARE_MAX_UPLOAD": "2M", "KADSHARE_DATA": "/tmp/x", "KADSHARE_LOG_LEVEL": "debug",
        }
        args = {"--rest-port": "9100", "--bootstrap": [], "--accept-uploads": False}
        config, level = build_config(args, env)
        assert (config.rest_port, config.dht_port) == (9100, 9002)
        assert config.bootstrap == (("10.0.0.1", 4000), ("::1", 4001))
        assert config.accept_uploads and config.max_upload == 2 * 1024 * 1024
        assert str(config.data_dir) == "/tmp/x" and level == 10

    def test_caps_from_flags_and_environment(self) -> None:
        env = {"KADSHARE_MAX_UPLOAD_RATE": "512K"}
        config, _ = build_config({"--bootstrap": [], "--max-upload-slots": "16/2"}, env)
        assert config.max_upload_rate == 512 * 1024
        assert (config.max_concurrent_downloads, config.max_downloads_per_client) == (16, 2)
        config, _ = build_config({"--bootstrap": [], "--max-upload-rate": "20M"}, env)
        assert config.max_upload_rate == 20 * 1024 * 1024 and config.max_downloads_per_client == 0

    def test_parsers(self) -> None:
        assert parse_address("example.org:8468") == ("example.org", 8468)
        assert parse_size("1G") == 1024**3 and parse_size("123") == 123
        for bad in ("x", ":1", "a:b", "[zz]:1", "a:1:2"):
            with pytest.raises(UsageError):
                parse_address(bad)


class TestLifecycle:
    def test_json_line_node_json_then_sigterm_exits_0(self, tmp_path: Path) -> None:
        share = tmp_path / "share"
        share.mkdir()
        (share / "song.ogg").write_bytes(b"la la la")
        node = start(tmp_path, "--share", str(share))
        info = node.info
        try:
            assert set(info) == {"node_id", "host", "dht_port", "grpc_port", "rest_port",
                                 "transfers", "network"}
            assert (info["transfers"], info["network"]) == ("tls", "public")
            assert json.loads((tmp_path / "data" / "node.json").read_text()) == info
            files = httpx.get(f"http://127.0.0.1:{info['rest_port']}/files", timeout=10).json()
            assert [f["name"] for f in files["files"]] == ["song.ogg"]
        finally:
            code = node.stop(START_TIMEOUT, signal.SIGTERM)
        assert code == 0
        stderr = (tmp_path / "stderr").read_text()
        assert "Traceback" not in stderr
        assert all(line.count(" ") >= 2 for line in stderr.splitlines())  # one line per event

    def test_sigint_with_options_from_environment(self, tmp_path: Path) -> None:
        share = tmp_path / "s"
        share.mkdir()
        node = start(tmp_path, env={"KADSHARE_SHARE": str(share), "KADSHARE_HOST": "127.0.0.1"})
        info = node.info
        try:
            status = httpx.get(f"http://127.0.0.1:{info['rest_port']}/status", timeout=10).json()
            assert status["node_id"] == info["node_id"]
        finally:
            code = node.stop(START_TIMEOUT, signal.SIGINT)
        assert code == 0
