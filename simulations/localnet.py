"""A small network of real ``kadshare-node`` processes on 127.0.0.1.

Used by ``make demo``, the end-to-end tests and the process runner: each peer is the
installed console script in its own process, with its own share and data folders under
one root, all ports chosen by the OS (port 0). Everything here is bounded in time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 20.0


class LocalNetError(RuntimeError):
    """A peer process failed to start or to stop as expected."""


def console_script(name: str) -> str:
    """Path of an installed console script, preferring the running interpreter's venv."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise LocalNetError(f"{name!r} is not installed; run `make install` first")
    return found


@dataclass
class Peer:
    """One running ``kadshare-node`` process and the folders it owns."""

    index: int
    process: subprocess.Popen[bytes]
    share: Path
    data: Path
    info: dict[str, object] = field(default_factory=dict)

    @property
    def rest_url(self) -> str:
        return f"http://{self.info['host']}:{self.info['rest_port']}"

    @property
    def grpc_address(self) -> str:
        return f"{self.info['host']}:{self.info['grpc_port']}"

    @property
    def dht_address(self) -> tuple[str, int]:
        return str(self.info["host"]), int(str(self.info["dht_port"]))

    @property
    def node_id(self) -> str:
        return str(self.info["node_id"])

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Abrupt end (SIGKILL), as a crash or power loss would be."""
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=DEFAULT_STOP_TIMEOUT)

    def terminate(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
        """Graceful end (SIGTERM); returns the exit code, SIGKILLs after ``timeout``."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=DEFAULT_STOP_TIMEOUT)
            raise LocalNetError(f"peer {self.index} ignored SIGTERM for {timeout:.0f} s") from None

    def log_tail(self, lines: int = 20) -> str:
        path = self.data.parent / "stderr.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalNetwork:
    """Start, track and stop ``kadshare-node`` processes under one root folder."""

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.host = host
        self.extra_args = extra_args
        self.env = {**os.environ, **(env or {})}
        self.peers: list[Peer] = []

    def start_peer(
        self,
        files: dict[str, bytes] | None = None,
        *,
        bootstrap: list[Peer] | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> Peer:
        """Start one peer sharing ``files`` (name -> content) and wait for its JSON line."""
        index = len(self.peers)
        base = self.root / f"peer{index}"
        share, data = base / "share", base / "data"
        share.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            (share / name).write_bytes(content)
        args = [
            console_script("kadshare-node"),
            "--share", str(share),
            "--data", str(data),
            "--host", self.host,
            "--rest-host", self.host,  # the harness reaches REST where it put the node
            "--dht-port", "0",
            "--grpc-port", "0",
            "--rest-port", "0",
            *self.extra_args,
        ]
        for other in bootstrap or []:
            host, port = other.dht_address
            args += ["--bootstrap", f"{host}:{port}"]
        stdout_path, stderr_path = base / "stdout.log", base / "stderr.log"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env
            )
        peer = Peer(index=index, process=process, share=share, data=data)
        self.peers.append(peer)
        peer.info = self._wait_for_json_line(peer, stdout_path, timeout)
        log.info("peer %d up: %s", index, peer.info)
        return peer

    def _wait_for_json_line(self, peer: Peer, stdout_path: Path, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = stdout_path.read_text(errors="replace")
            if "\n" in text:
                first = text.split("\n", 1)[0]
                try:
                    return json.loads(first)
                except json.JSONDecodeError as exc:
                    raise LocalNetError(f"peer {peer.index} printed {first!r}") from exc
            if not peer.alive():
                raise LocalNetError(
                    f"peer {peer.index} exited with {peer.process.returncode} before listening:"
                    f"\n{peer.log_tail()}"
                )
            time.sleep(0.05)
        peer.kill()
        raise LocalNetError(f"peer {peer.index} printed no JSON line in {timeout:.0f} s")

    def start(self, shares: list[dict[str, bytes]]) -> list[Peer]:
        """Start one peer per entry of ``shares``; the first is the bootstrap of the rest."""
        first = self.start_peer(shares[0])
        for files in shares[1:]:
            self.start_peer(files, bootstrap=[first])
        return self.peers

    def stop(self) -> dict[int, int]:
        """SIGTERM every live peer; returns exit codes by peer index (SIGKILLed: -9)."""
        codes: dict[int, int] = {}
        for peer in self.peers:
            if peer.alive():
                try:
                    codes[peer.index] = peer.terminate()
                except LocalNetError as exc:
                    log.warning("%s", exc)
                    codes[peer.index] = -9
            else:
                codes[peer.index] = peer.process.returncode
        return codes

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
