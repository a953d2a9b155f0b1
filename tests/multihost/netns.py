"""A throw-away multi-host lab built from Linux network namespaces.

Why: loopback hides everything that depends on distinct addresses (per-prefix routing
admission, a host that becomes unreachable, a peer advertising the wrong address). The
lab gives each "host" its own namespace and address; every host's veth ends in a hub
namespace holding the bridge, so the root namespace (the real machine) is never touched
and the private /24 exists only inside the lab.

Names are ``ks<pid>...``; ``Lab.close`` runs from a fixture finalizer and from
``atexit``; ``remove_leftovers`` deletes namespaces of earlier runs whose process died.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "ks"
SUBNET = "10.213"  # private /16 that lives only inside the lab's namespaces
PREFIX_LEN = 16
CLONE_NEWNET = 0x40000000
_LEFTOVER = re.compile(rf"^{PREFIX}(\d+)(hub|h\d+)$")


class LabUnavailable(RuntimeError):
    """Namespaces cannot be created here (not root, no `ip`, no CAP_SYS_ADMIN)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=20, check=check
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(name: str) -> None:
    """SIGKILL every process living in namespace ``name``."""
    for pid in _ip("netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_leftovers() -> list[str]:
    """Delete lab namespaces left by runs whose process is gone; return their names."""
    if shutil.which("ip") is None:
        return []
    out = _ip("netns", "list", check=False).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _LEFTOVER.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _kill_inside(name)  # peers orphaned by a killed test run
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace ``name`` (setns affects one thread only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Host:
    """One namespace with one address; ``run_in`` executes a callable inside it."""

    index: int
    netns: str
    addr: str
    hub_port: str  # the veth end inside the hub namespace (down = cut off)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def run_in(self, fn: Any, *args: Any, timeout: float = 60.0) -> Any:
        """Call ``fn(*args)`` on a thread living in this host's namespace."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=1, initializer=enter_netns, initargs=(self.netns,)
            )
        return self._pool.submit(fn, *args).result(timeout=timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class Lab:
    """``n`` hosts on one bridge: ``10.213.1.1`` .. ``10.213.n.1`` in one /16.

    Each host sits in its own /24, as distinct hosts on the Internet would: the DHT caps
    contacts per /24 in a bucket, so five peers in one /24 would not all be admitted.
    """

    def __init__(self, n: int = 5) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.hub = f"{self.tag}hub"
        self.hosts: list[Host] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self._closed = False
        self._n = n

    def open(self) -> Lab:
        if os.geteuid() != 0:
            raise LabUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise LabUnavailable("iproute2 `ip` not found")
        remove_leftovers()
        atexit.register(self.close)
        res = _ip("netns", "add", self.hub, check=False)
        if res.returncode != 0:
            raise LabUnavailable(f"`ip netns add` failed: {res.stderr.strip()}")
        try:
            _ip("-n", self.hub, "link", "set", "lo", "up")
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for i in range(1, self._n + 1):
                self.hosts.append(self._add_host(i))
        except (subprocess.CalledProcessError, OSError) as exc:
            self.close()
            detail = getattr(exc, "stderr", "") or str(exc)
            raise LabUnavailable(f"cannot build the lab: {detail.strip()}") from exc
        return self

    def _add_host(self, i: int) -> Host:
        ns = f"{self.tag}h{i}"
        addr = f"{SUBNET}.{i}.1"
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        # both veth ends are born inside their namespaces: nothing appears in the root one
        _ip("link", "add", "name", "eth0", "netns", ns, "type", "veth",
            "peer", "name", f"p{i}", "netns", self.hub)
        _ip("-n", self.hub, "link", "set", f"p{i}", "master", "br0")
        _ip("-n", self.hub, "link", "set", f"p{i}", "up")
        _ip("-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return Host(index=i, netns=ns, addr=addr, hub_port=f"p{i}")

    # -- faults ---------------------------------------------------------------------
    def cut(self, host: Host) -> None:
        """Partition ``host`` from every other host (its bridge port goes down)."""
        _ip("-n", self.hub, "link", "set", host.hub_port, "down")

    def heal(self, host: Host) -> None:
        _ip("-n", self.hub, "link", "set", host.hub_port, "up")

    def add_address(self, host: Host, cidr: str) -> None:
        """Give ``host`` another address (for per-prefix admission tests)."""
        _ip("-n", host.netns, "addr", "add", cidr, "dev", "eth0")

    # -- processes --------------------------------------------------------------------
    def spawn(self, host: Host, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        """Start ``argv`` inside ``host``'s namespace; it is killed by ``close``."""
        proc = subprocess.Popen(
            [*self.prefix(host), *argv],
            stdout=subprocess.PIPE,
            stderr=kw.pop("stderr", subprocess.DEVNULL),
            text=True,
            start_new_session=True,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def prefix(self, host: Host) -> list[str]:
        """Words that run a command inside ``host``'s namespace."""
        return ["ip", "netns", "exec", host.netns]

    def adopt(self, proc: subprocess.Popen[Any]) -> None:
        """Have ``close`` kill ``proc`` too (started with ``prefix`` in a new session)."""
        self.procs.append(proc)

    def close(self) -> None:
        """Kill our processes and delete every namespace of this lab (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        for host in self.hosts:
            host.close()
        names = [h.netns for h in self.hosts] + [self.hub]
        for name in names:
            _ip("netns", "del", name, check=False)
        # namespaces created before a failure but not yet listed in self.hosts
        for line in _ip("netns", "list", check=False).stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(self.tag) and _LEFTOVER.match(name):
                _ip("netns", "del", name, check=False)


def read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Read the first JSON object a process prints on stdout, bounded by ``timeout``."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    return json.loads(line)
    finally:
        sel.close()
    raise TimeoutError(f"no JSON line from {proc.args!r} (exit code {proc.poll()})")


def wait_until(pred: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll ``pred`` until it returns something truthy; bounded in time and tries."""
    deadline = time.monotonic() + timeout
    last: Any = None
    for _ in range(int(timeout / interval) + 1):
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return last
