"""docker: each node in its own container of the kadshare image, on a private network.

The same child-process model as ``process`` and ``netns`` (process.py), with
``docker run -i`` as the command prefix. One user-defined bridge network per run,
``kadsim-<run>`` on a free 10.X.0.0/16; node ``idx`` gets a fixed address on it and the
harness (tracker, REST calls, fetches) sits on the bridge's gateway 10.X.0.1, so no
traffic leaves the machine. The run's work folder is mounted at the same path inside
every container, so workload paths given to ``POST /files`` are the same everywhere.

Churn means the same as elsewhere: a leave is SIGTERM (``docker run`` passes it to the
node through tini), a crash is ``docker kill``. ``close`` removes every container and
the network. Needs a Docker daemon and the image (``make image``; ``--image`` through
``KADSHARE_SIM_IMAGE``); without them RunnerUnavailable (``kadshare-sim`` exits 2).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
from typing import Any

from simulations.impls import ImplNode
from simulations.runners.base import RunnerUnavailable
from simulations.runners.process import (
    PeerProcessNode,
    SubprocessRunner,
    WorkerNode,
    subnet_host,
)

__all__ = ["DockerRunner", "docker_available"]

NAME_PREFIX = "kadsim-"
DOCKER_TIMEOUT = 60.0
#: Python of the image's virtual environment (see the Dockerfile).
IMAGE_PYTHON = "/opt/kadshare/bin/python"


def _docker(*args: str, check: bool = True,
            timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def image_name() -> str:
    return os.environ.get("KADSHARE_SIM_IMAGE", "kadshare:latest")


def docker_available() -> tuple[bool, str]:
    """(True, "") when a daemon answers and the image exists, else (False, reason)."""
    if shutil.which("docker") is None:
        return False, "no docker client is installed"
    try:
        if _docker("info", check=False, timeout=20).returncode != 0:
            return False, "no Docker daemon answers (start dockerd)"
        if _docker("image", "inspect", image_name(), check=False).returncode != 0:
            return False, f"the image {image_name()} is missing (make image)"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"docker does not answer: {exc}"
    return True, ""


class _Container:
    """What crash and leave add for a node in a container: the container must go too."""

    runner: Any  # the DockerRunner; typed by the process node class this is mixed into
    idx: int

    def _kill_container(self) -> None:
        self.runner.kill_container(self.idx)


class DockerPeerNode(_Container, PeerProcessNode):
    async def leave(self) -> None:
        try:
            await super().leave()
        finally:
            self._kill_container()  # if the grace ran out: the client is gone, not the node

    def crash(self) -> None:
        self._kill_container()
        super().crash()


class DockerWorkerNode(_Container, WorkerNode):
    def crash(self) -> None:
        self._kill_container()
        super().crash()


class DockerRunner(SubprocessRunner):
    """Nodes as containers on one private Docker network."""

    name = "docker"
    python = IMAGE_PYTHON

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_id = secrets.token_hex(4)
        self.network = f"{NAME_PREFIX}{self.run_id}"
        self.net = 150
        self.image = image_name()
        self.containers: list[str] = []
        self._killers: list[subprocess.Popen[bytes]] = []
        self._hosts: dict[int, str] = {}
        self._closed = False
        self._network_made = False

    @property
    def infra_host(self) -> str:
        return f"10.{self.net}.0.1"

    async def start(self) -> None:
        ok, why = await asyncio.to_thread(docker_available)
        if not ok:
            raise RunnerUnavailable(why)
        atexit.register(self._cleanup_sync)  # if the process leaves without close()
        await asyncio.to_thread(self._make_network)
        await super().start()

    def _make_network(self) -> None:
        """A bridge on a free 10.X.0.0/16 (Docker refuses one that overlaps)."""
        last = ""
        for _ in range(16):
            net = 150 + secrets.randbelow(50)
            done = _docker("network", "create", "--driver", "bridge",
                           "--subnet", f"10.{net}.0.0/16", "--gateway", f"10.{net}.0.1",
                           "--label", "kadshare-sim", self.network, check=False)
            if done.returncode == 0:
                self.net, self._network_made = net, True
                return
            last = done.stderr.strip()
        raise RunnerUnavailable(f"cannot create a Docker network: {last}")

    def host_for(self, idx: int) -> str:
        return subnet_host(self._hosts, idx, self.net, "containers")

    def container(self, idx: int) -> str:
        return f"{self.network}-{idx}"

    def prefix(self, idx: int) -> list[str]:
        name = self.container(idx)
        if name not in self.containers:
            self.containers.append(name)
        folder = str(self.workdir)
        return [
            "docker", "run", "--rm", "-i", "--name", name, "--network", self.network,
            "--ip", self.host_for(idx), "--label", "kadshare-sim",
            # Files in the work folder belong to whoever runs the harness.
            "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp",
            "-v", f"{folder}:{folder}", "--entrypoint", "/usr/bin/tini", self.image, "--",
        ]

    async def spawn(self, idx: int) -> ImplNode:
        if self._closed:
            raise RunnerUnavailable("runner closed")
        host = self.host_for(idx)
        if self.impl.name == "kadshare":
            return DockerPeerNode(idx, host, {}, self)
        return DockerWorkerNode(idx, host, self.impl.node_params(), self, self.impl.name)

    def kill_container(self, idx: int) -> None:
        """SIGKILL the node's container without waiting (crash() is synchronous)."""
        with contextlib.suppress(OSError):
            self._killers.append(subprocess.Popen(
                ["docker", "kill", self.container(idx)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _cleanup_sync(self) -> None:
        for proc in self._killers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=DOCKER_TIMEOUT)
        self._killers.clear()
        if self.containers:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _docker("rm", "-f", *self.containers, check=False, timeout=120)
            self.containers.clear()
        if self._network_made:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _docker("network", "rm", self.network, check=False)
            self._network_made = False

    async def close(self) -> None:
        self._closed = True
        try:
            await super().close()
        finally:
            await asyncio.to_thread(self._cleanup_sync)
            atexit.unregister(self._cleanup_sync)
