"""Crash faults with real ``kadshare-node`` processes on loopback.

A peer killed with SIGKILL (power cut, OOM killer) and started again on the same data
folder must come back as the same peer: same node id, rejoined without being told where
(through the contacts it saved), sharing its files again without hashing them again,
and downloadable by others. The pclient owner's tests cover a provider killed
mid-download and a client interrupted and resumed (``tests/pclient``).
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kadcommon.merkle import file_id_of_bytes
from pserver.launch import LaunchError, NodeProcess, NodeSpec, console_script

RNG = random.Random(9)
FILES = {f"crash survivor {i}.dat": RNG.randbytes(300_000 + i) for i in range(3)}
IDS = {name: file_id_of_bytes(data) for name, data in FILES.items()}
POLL = 60.0


class Proc:
    """One kadshare-node process with fixed folders (so it can be restarted on them)."""

    def __init__(self, root: Path, name: str) -> None:
        self.share = root / name / "share"
        self.data = root / name / "data"
        self.share.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = root / name / "stderr.log"
        self.node: NodeProcess | None = None
        self.info: dict[str, Any] = {}

    def start(self, bootstrap: Proc | None = None) -> dict[str, Any]:
        spec = NodeSpec(data=self.data, share=self.share,
                        bootstrap=[bootstrap.node.bootstrap_address] if bootstrap and
                        bootstrap.node else [])
        self.node = NodeProcess.launch(spec, stdout=self.log.with_suffix(".out"),
                                       stderr=self.log, timeout=90)
        self.info = self.node.info
        return self.info

    @property
    def url(self) -> str:
        assert self.node is not None
        return self.node.rest_url

    def get(self, path: str, **params: str) -> Any:
        reply = httpx.get(self.url + path, params=params, timeout=45.0)
        reply.raise_for_status()
        return reply.json() if "json" in reply.headers.get("content-type", "") else reply.text

    def kill9(self) -> None:
        assert self.node is not None
        self.node.kill()

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()


def poll(pred: Any, timeout: float = POLL, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / interval) + 1):
        last = pred()
        if last or time.monotonic() > deadline:
            break
        time.sleep(interval)
    return last


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    made = [Proc(tmp_path, n) for n in ("seed", "other", "victim")]
    try:
        yield made
    finally:
        for p in made:
            p.stop()


class TestCrashRestart:
    def test_sigkill_then_restart_same_data_folder(self, procs: list[Proc],
                                                   tmp_path: Path) -> None:
        seed, other, victim = procs
        for name, data in FILES.items():
            (victim.share / name).write_bytes(data)
        seed.start()
        other.start(bootstrap=seed)
        first = victim.start(bootstrap=seed)
        assert metric(victim.get("/metrics"), "kadshare_files_hashed") == len(FILES)

        def seen_from_seed(grpc_port: int) -> bool:
            for fid in IDS.values():
                provs = seed.get(f"/providers/{fid}")["providers"]
                if not any(p["node_id"] == first["node_id"]
                           and p["grpc"].endswith(f":{grpc_port}") for p in provs):
                    return False
            return True

        assert poll(lambda: seen_from_seed(first["grpc_port"]))
        # state a crash-safe node has on disk before it can be killed
        assert poll(lambda: (victim.data / "contacts.msgpack").exists()
                    and (victim.data / "hashcache.msgpack").exists(), timeout=40)

        victim.kill9()
        again = victim.start()  # no --bootstrap: it must rejoin through saved contacts
        assert again["node_id"] == first["node_id"]
        assert metric(victim.get("/metrics"), "kadshare_files_hashed") == 0, "rehashed"
        assert {f["file_id"] for f in victim.get("/files")["files"]} == set(IDS.values())
        assert poll(lambda: victim.get("/peers")["peers"]), "did not rejoin"
        # others see it again at its new gRPC port and can download from it
        assert poll(lambda: seen_from_seed(again["grpc_port"])), "not re-announced"
        fid = IDS["crash survivor 1.dat"]
        out = tmp_path / "got"
        out.mkdir()
        res = subprocess.run(
            [console_script("kadshare"), "--node", other.url, "get", fid, "-o", str(out),
             "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        got = [p for p in out.iterdir() if not p.name.startswith(".")]
        assert len(got) == 1 and file_id_of_bytes(got[0].read_bytes()) == fid


def garble(path: Path, how: str) -> None:
    data = path.read_bytes() if path.exists() else b""
    path.write_bytes({"empty": b"", "half": data[: len(data) // 2],
                      "noise": RNG.randbytes(300)}[how])


class TestDamagedDataFolder:
    """Files in the data folder damaged between runs (disk error, half-written copy)."""

    @pytest.mark.parametrize("how", ["noise", "half"])
    def test_damaged_state_files_never_cost_the_identity_or_a_traceback(
        self, procs: list[Proc], how: str
    ) -> None:
        seed, _, victim = procs
        (victim.share / "kept.txt").write_bytes(b"still shared after the damage")
        first = victim.start()
        victim.stop()
        for name in ("hashcache.msgpack", "contacts.msgpack", "node.json", "token"):
            garble(victim.data / name, how)
        again = victim.start()  # caches and contacts are rebuilt, the identity is kept
        assert again["node_id"] == first["node_id"]
        assert [f["name"] for f in victim.get("/files")["files"]] == ["kept.txt"]
        token = (victim.data / "token").read_text().strip()
        assert token, "a damaged token must be replaced by a fresh one"
        reply = httpx.post(victim.url + "/files", json={"path": "/nonexistent"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert reply.status_code in (400, 404), reply.text
        victim.stop()
        garble(victim.data / "identity.key", how)
        log_before = victim.log.read_text(errors="replace")
        with pytest.raises(LaunchError) as refused:
            victim.start()  # must refuse: a new identity would silently be another peer
        assert refused.value.returncode not in (None, 0), refused.value
        tail = victim.log.read_text(errors="replace")[len(log_before):]
        assert "Traceback" not in tail, tail
        assert "identity" in tail.lower(), tail
