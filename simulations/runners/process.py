"""The ``process`` runner: nodes as child processes; its classes also serve the
``netns`` and ``docker`` runners.

kadshare nodes are the real peer, ``kadshare-node`` (DHT, gRPC and REST): the harness
shares workload files through ``POST /files`` and looks up through
``GET /providers/{id}``, as a user's client would. kademlia and tracker nodes run in
``simulations.runners.worker`` processes. Every child is killed in ``close``; all files
live under the run's temporary work folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from pserver.launch import AsyncNodeProcess, NodeSpec, python_command
from simulations.impls import ImplNode
from simulations.runners.base import Runner, RunnerUnavailable
from simulations.scenarios import FileSpec, file_content

log = logging.getLogger(__name__)

__all__ = ["ProcessRunner", "SubprocessRunner", "WorkerNode", "PeerProcessNode"]

START_TIMEOUT = 30.0
STOP_GRACE = 5.0
HTTP_TIMEOUT = 10.0


class _Child:
    """One child process; ``kill`` is idempotent and synchronous."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def terminate(self, grace: float = STOP_GRACE) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except asyncio.TimeoutError:
                self.kill()

    async def reap(self) -> None:
        self.kill()
        with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
            await asyncio.wait_for(self.proc.wait(), STOP_GRACE)


class WorkerNode(ImplNode):
    """Proxy for a node running in a worker process (kademlia, tracker)."""

    remote = True

    def __init__(self, idx: int, host: str, params: dict[str, Any], runner: SubprocessRunner,
                 impl: str) -> None:
        super().__init__(idx, host, params)
        self.runner = runner
        self.impl = impl
        self.child: _Child | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._records = 0
        self._maint = 0

    async def _spawn(self) -> None:
        cfg = self.runner.cfg
        params = {"impl": self.impl, "idx": self.idx, "host": self.host, "node": self.params,
                  "seed": cfg.seed, "latency": list(cfg.latency), "loss": cfg.loss}
        argv = [*self.runner.prefix(self.idx), self.runner.python, "-m",
                "simulations.runners.worker", json.dumps(params)]
        err = open(self.runner.logdir / f"worker-{self.idx}.log", "wb")  # noqa: SIM115, ASYNC230
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=err, start_new_session=True, limit=1 << 20)
        finally:
            err.close()
        self.child = _Child(proc)
        self.runner.children.append(self.child)
        ready = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)  # type: ignore[union-attr]  # stdout=PIPE was given
        if not ready:
            raise RuntimeError(f"worker {self.idx} exited before it was ready")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.child is not None and self.child.proc.stdout is not None
        for _ in range(100_000_000):
            line = await self.child.proc.stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
                fut = self._pending.pop(int(msg["id"]))
            except (ValueError, KeyError, TypeError):
                continue
            self._records = int(msg.get("records") or 0)
            self._maint = int(msg.get("maint") or 0)
            if not fut.done():
                fut.set_result(msg)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("worker process ended"))
        self._pending.clear()

    async def _call(self, cmd: str, **kw: Any) -> Any:
        child = self.child
        if child is None or child.proc.returncode is not None or child.proc.stdin is None:
            raise ConnectionError("worker process is not running")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        child.proc.stdin.write((json.dumps({"id": rid, "cmd": cmd, **kw}) + "\n").encode())
        try:
            msg = await fut
        finally:
            self._pending.pop(rid, None)
        from simulations.netmodel import op_counter

        ctr = op_counter.get()
        if ctr is not None:
            ctr[0] += int(msg.get("msgs") or 0)
            ctr[1] += int(msg.get("bytes") or 0)
        if not msg.get("ok"):
            raise RuntimeError(str(msg.get("error")))
        return msg.get("result")

    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        await self._spawn()
        res = await self._call("start", bootstrap=[list(a) for a in bootstrap])
        self.addr = (str(res["addr"][0]), int(res["addr"][1]))
        self.provider_key = str(res["key"])

    async def announce(self, f: FileSpec) -> None:
        await self._call("announce", file=f.__dict__)

    async def lookup(self, f: FileSpec) -> list[str]:
        return [str(k) for k in await self._call("lookup", file=f.__dict__)]

    async def leave(self) -> None:
        try:
            await asyncio.wait_for(self._call("leave"), STOP_GRACE)
        finally:
            self.crash()

    def crash(self) -> None:
        if self.child is not None:
            self.child.kill()

    def records(self) -> int:
        return self._records

    async def refresh(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._call("stats"), HTTP_TIMEOUT)

    async def reset_counters(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._call("reset"), HTTP_TIMEOUT)

    def maintenance_bytes(self) -> int:
        return self._maint


class PeerProcessNode(ImplNode):
    """A real ``kadshare-node`` process, driven over its REST API."""

    remote = True
    counts_traffic = False

    def __init__(self, idx: int, host: str, params: dict[str, Any],
                 runner: SubprocessRunner) -> None:
        super().__init__(idx, host, params)
        self.runner = runner
        self.child: AsyncNodeProcess | None = None
        self.http: httpx.AsyncClient | None = None
        self.token = ""
        self._records = 0

    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        base = self.runner.workdir / f"node-{self.idx}"
        data, share = base / "data", base / "share"
        data.mkdir(parents=True, exist_ok=True)
        share.mkdir(parents=True, exist_ok=True)
        cap = self.runner.cfg.upload_rate
        extra = ("--log-level", "warning", *(("--max-upload-rate", str(cap)) if cap else ()))
        spec = NodeSpec(
            data=data, share=share, host=self.host, rest_host=self.host,
            bootstrap=[f"{h}:{p}" for h, p in bootstrap], extra=extra,
            command=python_command(self.runner.python), prefix=self.runner.prefix(self.idx),
            env={**os.environ, **self.runner.env}, new_session=True,
            name=f"kadshare-node {self.idx}")
        self.child = await AsyncNodeProcess.launch(
            spec, stderr=self.runner.logdir / f"node-{self.idx}.log", timeout=START_TIMEOUT)
        self.runner.children.append(self.child)
        info = self.child.info
        self.runner.transfers = str(info.get("transfers", "tls"))
        self.addr = self.child.dht_address
        self.provider_key = self.child.grpc_address
        rest = int(info["rest_port"])
        self.token = (data / "token").read_text().strip()
        self.http = httpx.AsyncClient(base_url=f"http://{self.host}:{rest}",
                                      timeout=HTTP_TIMEOUT, trust_env=False)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def announce(self, f: FileSpec) -> None:
        assert self.http is not None
        path = self.runner.workload_file(f)
        r = await self.http.post("/files", json={"path": str(path)}, headers=self._auth())
        if r.status_code >= 300:
            raise RuntimeError(f"POST /files: {r.status_code} {r.text[:200]}")

    async def lookup(self, f: FileSpec) -> list[str]:
        assert self.http is not None
        r = await self.http.get(f"/providers/{f.file_id}")
        if r.status_code == 404:
            return []
        r.raise_for_status()
        # peers still downloading it (partial providers) are no answer to a lookup; a
        # fetch finds them by itself (pclient.download.swarm)
        return [str(p.get("grpc")) for p in r.json().get("providers", [])
                if not p.get("partial")]

    async def leave(self) -> None:
        if self.child is not None:
            await self.child.stop(STOP_GRACE)
        await self._close_http()

    def crash(self) -> None:
        if self.child is not None:
            self.child.kill()
        if self.http is not None:
            asyncio.ensure_future(self._close_http())

    async def _close_http(self) -> None:
        http, self.http = self.http, None
        if http is not None:
            with contextlib.suppress(Exception):
                await http.aclose()

    async def fetch(self, f: FileSpec, providers: list[str]) -> bool | None:
        """Fetch over gRPC with the pclient library (hash-verified, atomic), then delete.

        The download swarms: this node serves the chunks fetched so far to the others
        (a partial provider) and partial providers that appear become sources, so a
        flash crowd does not queue behind the file's few (upload-capped) providers."""
        from pclient.download import DownloadConfig, NodeSwarm, download_file

        dest = self.runner.workdir / "fetched" / f"{self.idx}-{next(self.runner.fetch_ids)}"
        swarm = None
        if self.http is not None and self.child is not None:
            swarm = NodeSwarm(str(self.http.base_url), self.token, f.file_id,
                              str(self.child.info.get("node_id", "")))
        try:
            res = await download_file(
                f.file_id, dest, providers, swarm=swarm,
                config=DownloadConfig(sources=4, stall_timeout=5.0, info_timeout=3.0))
            return res.size == f.size
        except Exception as exc:   # any failure of the transfer is a measured outcome
            log.debug("fetch of %s by node %d failed: %r", f.file_id[:12], self.idx, exc)
            return False
        finally:
            if swarm is not None:
                await swarm.close()
            await asyncio.to_thread(shutil.rmtree, dest, True)

    def records(self) -> int:
        return self._records

    async def refresh(self) -> None:
        if self.http is None:
            return
        with contextlib.suppress(Exception):
            r = await self.http.get("/status")
            self._records = int(r.json().get("records") or 0)


#: Addresses one runner hands out in its 10.NET.0.0/16 (250 per third octet).
MAX_HOSTS = 250 * 250


def subnet_host(hosts: dict[int, str], idx: int, net: int, what: str) -> str:
    """Node ``idx``'s address in ``10.net.0.0/16``, handed out in order of first use
    (the netns and docker runners put one node per address)."""
    host = hosts.get(idx)
    if host is None:
        n = len(hosts)
        if n >= MAX_HOSTS:
            raise RunnerUnavailable(f"too many {what} for one /16")
        host = f"10.{net}.{n // 250}.{n % 250 + 2}"
        hosts[idx] = host
    return host


class SubprocessRunner(Runner):
    """Common part: children, their logs, workload files on disk."""

    env: dict[str, str] = {}
    #: The Python that runs nodes after ``prefix`` (the docker runner uses the image's).
    python: str = sys.executable

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.children: list[_Child | AsyncNodeProcess] = []
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._files: dict[int, Path] = {}
        self.fetch_ids = itertools.count(1)

    def prefix(self, idx: int) -> list[str]:
        """Command prefix that places node ``idx`` (empty: this namespace)."""
        return []

    def host_for(self, idx: int) -> str:
        return "127.0.0.1"

    def workload_file(self, f: FileSpec) -> Path:
        """The workload file on disk (written once, content derived from the seed)."""
        path = self._files.get(f.index)
        if path is None:
            folder = self.workdir / "files" / str(f.index)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f.name
            path.write_bytes(file_content(self.cfg.seed, f.index, f.size))
            self._files[f.index] = path
        return path

    async def spawn(self, idx: int) -> ImplNode:
        host = self.host_for(idx)
        if self.impl.name == "kadshare":
            return PeerProcessNode(idx, host, {}, self)
        return WorkerNode(idx, host, self.impl.node_params(), self, self.impl.name)

    async def close(self) -> None:
        try:
            for c in self.children:
                c.kill()
            await asyncio.gather(*(c.reap() for c in self.children), return_exceptions=True)
        finally:
            await super().close()


class ProcessRunner(SubprocessRunner):
    """process: every node a child process on 127.0.0.1."""

    name = "process"

    async def start(self) -> None:
        # The harness process hosts only the tracker; count its traffic too.
        self.netmodel.install(asyncio.get_running_loop())
        await super().start()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self.netmodel.uninstall()
