"""Start a ``kadshare-node`` process, wait for its JSON line, stop it.

The one way the tests, the benchmarks and the simulation harness run real peers, so the
flags, the reading of the JSON line and the stop sequence (a signal, then SIGKILL after
a grace period) live in one place. :meth:`NodeProcess.launch` is for synchronous code,
:meth:`AsyncNodeProcess.launch` for code already running in an event loop. Every wait
is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from kadcommon.addr import format_hostport

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
_POLL = 0.05

Stream = Path | int | None
_S = TypeVar("_S", bound="NodeProcess")
_A = TypeVar("_A", bound="AsyncNodeProcess")


class LaunchError(RuntimeError):
    """A peer process did not start (exited, printed something else, or timed out);
    ``returncode`` is its exit code when it exited by itself."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def console_script(name: str) -> str:
    """Path of an installed console script, preferring the running interpreter's venv."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise LaunchError(f"{name!r} is not installed; run `make install` first")
    return found


def python_command(python: str = sys.executable) -> tuple[str, ...]:
    """``kadshare-node`` run as a module of ``python`` (an image's or another venv's)."""
    return (python, "-m", "pserver.cli")


@dataclass(frozen=True)
class NodeSpec:
    """The command line of one peer (every port 0: the OS picks a free one) and where
    its process runs."""

    data: Path
    share: Path | None = None
    #: ``--host``; None leaves it to the environment or the default (127.0.0.1).
    host: str | None = "127.0.0.1"
    rest_host: str | None = None
    bootstrap: Sequence[str] = ()
    extra: Sequence[str] = ()
    #: How to run the node; empty: the installed ``kadshare-node`` script.
    command: Sequence[str] = ()
    #: Words before the command, e.g. ``ip netns exec NS``.
    prefix: Sequence[str] = ()
    #: The process's environment (None: this one's), folder, and own session (so a
    #: prefix's children can be killed as a group).
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    new_session: bool = False
    #: How errors and logs name the peer.
    name: str = "kadshare-node"

    def argv(self) -> list[str]:
        args = [*self.prefix, *(self.command or (console_script("kadshare-node"),))]
        args += ["--data", str(self.data), "--dht-port", "0", "--grpc-port", "0",
                 "--rest-port", "0"]
        if self.share is not None:
            args += ["--share", str(self.share)]
        if self.host is not None:
            args += ["--host", self.host]
        if self.rest_host is not None:
            args += ["--rest-host", self.rest_host]
        for address in self.bootstrap:
            args += ["--bootstrap", address]
        return [*args, *self.extra]

    def process_options(self, stderr: IO[bytes] | int | None) -> dict[str, Any]:
        """Keyword arguments shared by ``subprocess.Popen`` and asyncio's exec."""
        return {"stdin": subprocess.DEVNULL, "stderr": stderr, "cwd": self.cwd,
                "env": dict(self.env) if self.env is not None else None,
                "start_new_session": self.new_session}


def _parse_line(line: str, name: str) -> dict[str, Any] | None:
    """The JSON line as a dict; None for a line that is not one (skipped)."""
    text = line.strip()
    if not text.startswith("{"):
        if text:
            log.debug("%s printed %r before its JSON line", name, text[:200])
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LaunchError(f"{name} printed {text[:200]!r}") from exc
    if not isinstance(info, dict) or "rest_port" not in info:
        raise LaunchError(f"{name} printed {text[:200]!r}, not its JSON line")
    return info


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _open_stream(stream: Stream, stack: contextlib.ExitStack) -> IO[bytes] | int | None:
    if isinstance(stream, Path):
        return stack.enter_context(open(stream, "ab"))
    return stream


class _Running:
    """What the JSON line tells about a running peer."""

    def __init__(self, spec: NodeSpec, stderr: Stream) -> None:
        self.spec = spec
        self.name = spec.name
        self.stderr_path = stderr if isinstance(stderr, Path) else None
        self.info: dict[str, Any] = {}

    def _exited(self, code: int | None) -> LaunchError:
        tail = f":\n{self.log_tail()}" if self.stderr_path else ""
        return LaunchError(f"{self.name} exited with {code} before listening{tail}", code)

    def _ignored(self, sig: int, timeout: float) -> None:
        log.warning("%s ignored signal %d for %.0f s; killing it", self.name, sig, timeout)

    @property
    def share(self) -> Path | None:
        return self.spec.share

    @property
    def data(self) -> Path:
        return self.spec.data

    @property
    def node_id(self) -> str:
        return str(self.info["node_id"])

    @property
    def host(self) -> str:
        return str(self.info["host"])

    @property
    def rest_url(self) -> str:
        host = self.spec.rest_host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = self.host
        return f"http://{format_hostport(host, int(self.info['rest_port']))}"

    @property
    def grpc_address(self) -> str:
        return format_hostport(self.host, int(self.info["grpc_port"]))

    @property
    def dht_address(self) -> tuple[str, int]:
        return self.host, int(self.info["dht_port"])

    @property
    def bootstrap_address(self) -> str:
        """``HOST:PORT`` for another peer's ``--bootstrap``."""
        return format_hostport(self.host, int(self.info["dht_port"]))

    def log_tail(self, lines: int = 20) -> str:
        """The end of the process's stderr, when it went to a file."""
        return _tail(self.stderr_path, lines)


class NodeProcess(_Running):
    """A ``kadshare-node`` child process, for synchronous callers."""

    def __init__(self, spec: NodeSpec, process: subprocess.Popen[bytes], stderr: Stream) -> None:
        super().__init__(spec, stderr)
        self.process = process

    @classmethod
    def launch(cls: type[_S], spec: NodeSpec, *, stdout: Path,
               stderr: Stream = subprocess.DEVNULL, timeout: float = START_TIMEOUT) -> _S:
        """Start the peer and return once its JSON line is on ``stdout`` (a file, written
        afresh); on failure the process is gone and :class:`LaunchError` says why."""
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(stdout, "wb"))
            process = subprocess.Popen(
                spec.argv(), stdout=out, **spec.process_options(_open_stream(stderr, stack)))
        node = cls(spec, process, stderr)
        try:
            node.info = node._wait_for_line(stdout, timeout)
        except BaseException:
            node.kill()
            raise
        return node

    def _wait_for_line(self, stdout: Path, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / _POLL) + 2):
            text = stdout.read_text(errors="replace")
            for line in text.splitlines(keepends=True):
                if line.endswith("\n") and (info := _parse_line(line, self.name)):
                    return info
            if not self.alive():
                raise self._exited(self.process.returncode)
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        raise LaunchError(f"{self.name} printed no JSON line in {timeout:.0f} s")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Abrupt end (SIGKILL), as a crash or power loss would be."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> int:
        """Graceful end: ``sig``, then SIGKILL after ``timeout``; returns the exit code
        (negative: the signal that ended it, -9 when it had to be killed)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._ignored(sig, timeout)
                self.kill()
        return self.process.returncode if self.process.returncode is not None else -9


class AsyncNodeProcess(_Running):
    """A ``kadshare-node`` child process, for code running in an event loop."""

    def __init__(self, spec: NodeSpec, process: asyncio.subprocess.Process,
                 stderr: Stream) -> None:
        super().__init__(spec, stderr)
        self.process = process

    @classmethod
    async def launch(cls: type[_A], spec: NodeSpec, *, stderr: Stream = subprocess.DEVNULL,
                     timeout: float = START_TIMEOUT) -> _A:
        """Start the peer and return once it has printed its JSON line (read from a
        pipe); on failure the process is gone and :class:`LaunchError` says why."""
        with contextlib.ExitStack() as stack:
            process = await asyncio.create_subprocess_exec(
                *spec.argv(), stdout=asyncio.subprocess.PIPE,
                **spec.process_options(_open_stream(stderr, stack)))
        node = cls(spec, process, stderr)
        try:
            node.info = await asyncio.wait_for(node._read_line(), timeout)
        except asyncio.TimeoutError:
            await node.reap()
            raise LaunchError(f"{spec.name} printed no JSON line in {timeout:.0f} s") from None
        except BaseException:
            await node.reap()
            raise
        return node

    async def _read_line(self) -> dict[str, Any]:
        assert self.process.stdout is not None  # stdout=PIPE was given
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise self._exited(await self.process.wait())
            if info := _parse_line(line.decode(errors="replace"), self.name):
                return info

    def alive(self) -> bool:
        return self.process.returncode is None

    def kill(self) -> None:
        """Abrupt end (SIGKILL); does not wait (see :meth:`reap`)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def reap(self) -> None:
        """Kill and wait for the process to be gone (bounded)."""
        self.kill()
        with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)

    async def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> int:
        """Graceful end: ``sig``, then SIGKILL after ``timeout``; returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                return await asyncio.wait_for(self.process.wait(), timeout)
            except asyncio.TimeoutError:
                self._ignored(sig, timeout)
                await self.reap()
        return self.process.returncode if self.process.returncode is not None else -9


__all__ = [
    "AsyncNodeProcess",
    "LaunchError",
    "NodeProcess",
    "NodeSpec",
    "console_script",
    "python_command",
]
