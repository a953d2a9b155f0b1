"""Readiness for systemd ``Type=notify``: the node says READY=1 once it serves.

The test plays the service manager: it binds the unix datagram socket systemd would
create, passes it as ``NOTIFY_SOCKET`` and reads what a real ``kadshare-node`` sends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pserver.sdnotify import notify

SCRIPT = str(Path(sys.executable).parent / "kadshare-node")
WAIT = 60.0


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound unix datagram socket, as systemd makes for a Type=notify unit."""
    # sun_path is at most 107 bytes: pytest's tmp_path can be longer, so use /tmp.
    folder = Path(os.environ.get("TMPDIR", "/tmp"))
    path = str(folder / f"kadshare-notify-{os.getpid()}-{time.monotonic_ns()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(WAIT)
    try:
        yield sock, path
    finally:
        sock.close()
        Path(path).unlink(missing_ok=True)


def receive(sock: socket.socket) -> dict[str, str]:
    """One notification as a dict of its KEY=VALUE lines."""
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)


def test_the_node_is_reachable_when_it_says_ready_and_says_stopping_on_sigterm(
    tmp_path: Path, manager: tuple[socket.socket, str]
) -> None:
    sock, path = manager
    proc = subprocess.Popen(
        [SCRIPT, "--data", str(tmp_path / "data"), "--dht-port", "0", "--grpc-port", "0",
         "--rest-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "NOTIFY_SOCKET": path},
    )
    try:
        ready = receive(sock)
        assert ready.get("READY") == "1"
        # READY=1 means "serve now": the REST API answers at once, no retry needed.
        info = json.loads((tmp_path / "data" / "node.json").read_text())
        status = httpx.get(f"http://127.0.0.1:{info['rest_port']}/status", timeout=10).json()
        assert status["node_id"] == info["node_id"]
        assert str(info["grpc_port"]) in ready.get("STATUS", "")
        proc.send_signal(signal.SIGTERM)
        assert receive(sock).get("STOPPING") == "1"
        assert proc.wait(timeout=WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)


def test_abstract_socket_names_are_understood() -> None:
    name = f"kadshare-notify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"READY=1"


@pytest.mark.parametrize("value", ["", "vsock:2:1234", "/nonexistent/kadshare/notify.sock"])
def test_no_usable_socket_means_no_notification_and_no_error(value: str) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": value}) is False
