"""Issue 10, items 11 and 12: a start that cannot work says which flag to change."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = str(Path(sys.executable).parent / "kadshare-node")


def run_node(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ports = [w for flag in ("--dht-port", "--grpc-port", "--rest-port") if flag not in args
             for w in (flag, "0")]
    return subprocess.run(
        [SCRIPT, "--data", str(tmp / "data"), *ports, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize(
    ("argv", "named"),
    [(["--bogus"], "unknown option --bogus"), (["-x"], "unknown option -x"),
     (["--bogus=3"], "unknown option --bogus")],
)
def test_unknown_option_is_named(argv: list[str], named: str) -> None:
    result = subprocess.run([SCRIPT, *argv], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"kadshare-node: {named}"


@pytest.mark.parametrize(
    ("flag", "kind"),
    [("--grpc-port", socket.SOCK_STREAM), ("--rest-port", socket.SOCK_STREAM),
     ("--dht-port", socket.SOCK_DGRAM)],
)
def test_port_in_use_names_flag_and_port(tmp_path: Path, flag: str, kind: int) -> None:
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen(1)
        port = holder.getsockname()[1]
        result = run_node(tmp_path, flag, str(port))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no gRPC C-core line, no "node stopped"
    assert f"{flag} {port} is already in use on 127.0.0.1" in lines[0]
    assert not (tmp_path / "data" / "node.json").exists()


def test_host_that_is_not_ours(tmp_path: Path) -> None:
    result = run_node(tmp_path, "--host", "192.0.2.1")  # TEST-NET-1: never local
    assert result.returncode == 2
    assert "--host 192.0.2.1 is not an address of this machine" in result.stderr
