"""pserver.launch as its callers use it: a real ``kadshare-node`` started, read, stopped."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from pserver.launch import AsyncNodeProcess, LaunchError, NodeProcess, NodeSpec

TIMEOUT = 60.0


def test_a_peer_that_refuses_to_start_is_a_launch_error_with_its_exit_code(
    tmp_path: Path,
) -> None:
    spec = NodeSpec(data=tmp_path / "data", extra=("--max-upload-slots", "0"))
    with pytest.raises(LaunchError) as failed:
        NodeProcess.launch(spec, stdout=tmp_path / "out", stderr=tmp_path / "err",
                           timeout=TIMEOUT)
    assert failed.value.returncode == 2
    assert "--max-upload-slots" in str(failed.value)  # the stderr tail says why


def test_sync_launch_answers_and_stops_with_exit_0(tmp_path: Path) -> None:
    node = NodeProcess.launch(NodeSpec(data=tmp_path / "data"), stdout=tmp_path / "out",
                              timeout=TIMEOUT)
    try:
        status = httpx.get(node.rest_url + "/status", timeout=10).json()
        assert status["node_id"] == node.node_id
        assert node.bootstrap_address == f"127.0.0.1:{node.info['dht_port']}"
    finally:
        code = node.stop(TIMEOUT, signal.SIGINT)
    assert code == 0 and not node.alive()


async def test_async_launch_bootstraps_a_second_peer_and_kill_is_abrupt(
    tmp_path: Path,
) -> None:
    first = await AsyncNodeProcess.launch(NodeSpec(data=tmp_path / "a"), timeout=TIMEOUT)
    try:
        second = await AsyncNodeProcess.launch(
            NodeSpec(data=tmp_path / "b", bootstrap=[first.bootstrap_address]),
            timeout=TIMEOUT)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                peers = (await http.get(second.rest_url + "/peers")).json()["peers"]
            assert first.node_id in {p["node_id"] for p in peers}
        finally:
            await second.reap()
        assert second.process.returncode == -signal.SIGKILL
    finally:
        assert await first.stop(TIMEOUT) == 0
