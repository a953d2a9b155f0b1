"""netns: each node in its own network namespace with its own address.

Layout (all local, nothing routed off the machine): one Linux bridge in the root
namespace holding ``10.X.0.1/16`` (the tracker binds there), and per node a namespace
``kadshare-<run>-<idx>`` joined to the bridge by a veth pair, address ``10.X.a.b/16``.
Names carry a per-run id so parallel runs never collide. Needs root and ``ip``;
without them the runner raises RunnerUnavailable (``kadshare-sim`` exits 2).

Cleanup always runs: ``close`` deletes every namespace (which removes its veth end) and
the bridge; an ``atexit`` hook repeats it if the process is leaving another way.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from simulations.runners.base import RunnerUnavailable
from simulations.runners.process import SubprocessRunner, subnet_host

log = logging.getLogger(__name__)

__all__ = ["NetnsRunner", "netns_available"]

NS_PREFIX = "kadshare-"
IP_TIMEOUT = 10.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=IP_TIMEOUT)


# Capability bits (linux/capability.h) that creating namespaces, veths and a bridge needs.
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def _has_admin_caps() -> bool:
    """Whether this process holds CAP_SYS_ADMIN and CAP_NET_ADMIN.

    Root is not enough (a container or ``setpriv`` may take them away) and what
    matters is the capabilities, so read them rather than the user id."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            eff = int(line.split()[1], 16)
            return all(eff >> bit & 1 for bit in (CAP_NET_ADMIN, CAP_SYS_ADMIN))
    return os.geteuid() == 0


def netns_available() -> tuple[bool, str]:
    """(True, "") when namespaces can be made here, else (False, reason)."""
    if shutil.which("ip") is None:
        return False, "the 'ip' command (iproute2) is not installed"
    if not _has_admin_caps():
        return False, "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    name = f"{NS_PREFIX}probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (subprocess.SubprocessError, OSError) as exc:
        err = getattr(exc, "stderr", "") or str(exc)
        return False, f"cannot create a network namespace: {err.strip()}"
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        _ip("netns", "del", name, check=False)
    return True, ""


class NetnsRunner(SubprocessRunner):
    """Nodes as processes inside per-node namespaces on one private bridge."""

    name = "netns"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_id = secrets.token_hex(4)
        self.bridge = f"ksbr{self.run_id}"
        self.namespaces: list[str] = []
        self.net = 200
        self._closed = False
        self._hosts: dict[int, str] = {}

    @property
    def infra_host(self) -> str:
        return f"10.{self.net}.0.1"

    def _pick_subnet(self) -> int:
        used = _ip("-4", "-o", "addr", check=False).stdout
        for _ in range(64):
            cand = 200 + secrets.randbelow(50)
            if f" 10.{cand}." not in used:
                return cand
        raise RunnerUnavailable("no free 10.x.0.0/16 subnet for the bridge")

    async def start(self) -> None:
        ok, why = netns_available()
        if not ok:
            raise RunnerUnavailable(why)
        atexit.register(self._cleanup_sync)
        try:
            self.net = self._pick_subnet()
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"10.{self.net}.0.1/16", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except subprocess.CalledProcessError as exc:
            self._cleanup_sync()
            raise RunnerUnavailable(f"cannot set up the bridge: {exc.stderr.strip()}") from exc
        await super().start()

    def host_for(self, idx: int) -> str:
        return subnet_host(self._hosts, idx, self.net, "namespaces")

    def prefix(self, idx: int) -> list[str]:
        return ["ip", "netns", "exec", self._ns(idx)]

    def _ns(self, idx: int) -> str:
        return f"{NS_PREFIX}{self.run_id}-{idx}"

    def _make_ns(self, idx: int, host: str) -> None:
        ns = self._ns(idx)
        outer, inner = f"ksv{self.run_id}{idx}"[:15], f"ksp{self.run_id}{idx}"[:15]
        if len(f"ksv{self.run_id}{idx}") > 15:
            outer, inner = f"kv{secrets.token_hex(6)}", f"kp{secrets.token_hex(6)}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge, "up")
        _ip("-n", ns, "link", "set", inner, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{host}/16", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")

    async def spawn(self, idx: int) -> Any:
        if self._closed:
            raise RunnerUnavailable("runner closed")
        host = self.host_for(idx)
        try:
            await asyncio.to_thread(self._make_ns, idx, host)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"namespace for node {idx}: {exc.stderr.strip()}") from exc
        return await super().spawn(idx)

    def _cleanup_sync(self) -> None:
        for ns in list(self.namespaces):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _ip("netns", "del", ns, check=False)
            self.namespaces.remove(ns)
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _ip("link", "del", self.bridge, check=False)

    async def close(self) -> None:
        self._closed = True
        try:
            await super().close()
        finally:
            self._cleanup_sync()
            atexit.unregister(self._cleanup_sync)
