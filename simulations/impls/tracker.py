"""The central-tracker baseline, in the style of the original course design.

One index server knows every peer and every file; peers register their files with it,
send a heartbeat every ``HEARTBEAT`` seconds and ask it for providers. Entries not
refreshed for ``EXPIRY`` seconds are dropped. The server is a single point of failure:
``kill_infra`` (``--kill-tracker T``) crashes it and every later lookup fails.

Wire: one JSON object per UDP datagram, ``{"id", "op", ...}`` answered by
``{"id", "ok", ...}``; ops ``announce`` (key, file), ``lookup`` (file), ``heartbeat``
(key), ``bye`` (key). Malformed datagrams are dropped and logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from typing import Any

from simulations.impls.base import Impl, ImplNode
from simulations.scenarios import FileSpec

log = logging.getLogger(__name__)

__all__ = ["TrackerServer", "TrackerImpl", "TrackerSimNode", "HEARTBEAT", "EXPIRY"]

HEARTBEAT = 10.0
EXPIRY = 30.0
MAX_DATAGRAM = 8192
RPC_TIMEOUT = 1.0
RPC_TRIES = 3


class TrackerServer(asyncio.DatagramProtocol):
    """The index: file id -> {provider key: last seen}."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, float]] = {}
        self.seen: dict[str, float] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._warned = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio hands a Transport to this protocol

    def records(self) -> int:
        """Provider entries currently held."""
        return sum(len(v) for v in self.files.values())

    def _alive(self, key: str, now: float) -> bool:
        return now - self.seen.get(key, -1e9) <= EXPIRY

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (pure function of the index; easy to test)."""
        now = time.monotonic()
        op = req.get("op")
        key, fid = req.get("key"), req.get("file")
        if op == "announce" and isinstance(key, str) and isinstance(fid, str):
            self.seen[key] = now
            self.files.setdefault(fid, {})[key] = now
            return {"ok": True}
        if op == "heartbeat" and isinstance(key, str):
            self.seen[key] = now
            return {"ok": True}
        if op == "bye" and isinstance(key, str):
            self.seen.pop(key, None)
            for provs in self.files.values():
                provs.pop(key, None)
            return {"ok": True}
        if op == "lookup" and isinstance(fid, str):
            provs = self.files.get(fid, {})
            for k in [k for k in provs if not self._alive(k, now)]:
                del provs[k]
            return {"ok": True, "providers": sorted(provs)[:200]}
        return {"ok": False, "error": "bad request"}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            req = json.loads(data)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            if not self._warned:
                log.warning("tracker: dropping malformed datagram from %s: %s", addr, exc)
                self._warned = True
            return
        reply = self.handle(req)
        reply["id"] = req.get("id")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(json.dumps(reply).encode(), addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio hands a Transport to this protocol

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = json.loads(data)
            fut = self.pending.pop(int(reply["id"]))
        except (ValueError, KeyError, TypeError):
            return
        if not fut.done():
            fut.set_result(reply)


class TrackerSimNode(ImplNode):
    """A peer that trusts the tracker for everything."""

    def __init__(self, idx: int, host: str, params: dict[str, Any]) -> None:
        super().__init__(idx, host, params)
        thost, _, tport = str(params["tracker"]).rpartition(":")
        self.tracker = (thost, int(tport))
        self.proto: _Client | None = None
        self._ids = itertools.count(1)
        self._hb: asyncio.Task[None] | None = None

    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            _Client, local_addr=(self.host, 0))
        self.proto = proto
        self.addr = (self.host, int(transport.get_extra_info("sockname")[1]))
        self._hb = asyncio.create_task(self._heartbeat())

    async def _rpc(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send with retries; raise TimeoutError when the tracker never answers."""
        proto = self.proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            raise ConnectionError("node is not running")
        loop = asyncio.get_running_loop()
        for _ in range(RPC_TRIES):
            rid = next(self._ids)
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            proto.pending[rid] = fut
            proto.transport.sendto(json.dumps({**msg, "id": rid}).encode(), self.tracker)
            try:
                return await asyncio.wait_for(fut, RPC_TIMEOUT)
            except asyncio.TimeoutError:
                proto.pending.pop(rid, None)
        raise TimeoutError("tracker did not answer")

    async def _heartbeat(self) -> None:
        for _ in range(10_000_000):   # bounded; cancelled on stop
            await asyncio.sleep(HEARTBEAT)
            with contextlib.suppress(TimeoutError, ConnectionError):
                await self._rpc({"op": "heartbeat", "key": self.provider_key})

    async def announce(self, f: FileSpec) -> None:
        await self._rpc({"op": "announce", "key": self.provider_key, "file": f.file_id})

    async def lookup(self, f: FileSpec) -> list[str]:
        reply = await self._rpc({"op": "lookup", "file": f.file_id})
        provs = reply.get("providers")
        return [p for p in provs if isinstance(p, str)] if isinstance(provs, list) else []

    async def leave(self) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError):
            await self._rpc({"op": "bye", "key": self.provider_key})
        self.crash()

    def crash(self) -> None:
        if self._hb is not None:
            self._hb.cancel()
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


class TrackerImpl(Impl):
    """Runs the tracker server in the harness process."""

    name = "tracker"

    def __init__(self) -> None:
        self.server: TrackerServer | None = None
        self.address: tuple[str, int] | None = None
        self.killed = False

    async def setup(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            TrackerServer, local_addr=(host, 0))
        self.server = proto
        self.address = (host, int(transport.get_extra_info("sockname")[1]))
        log.info("tracker listening on %s:%d", *self.address)

    def node_params(self) -> dict[str, Any]:
        assert self.address is not None, "setup() first"
        return {"tracker": f"{self.address[0]}:{self.address[1]}"}

    def new_node(self, idx: int, host: str, params: dict[str, Any]) -> ImplNode:
        return TrackerSimNode(idx, host, params)

    async def kill_infra(self) -> bool:
        if self.server is not None and self.server.transport is not None:
            self.server.transport.close()
        self.killed = True
        return True

    async def teardown(self) -> None:
        await self.kill_infra()

    def infra_stats(self) -> dict[str, Any]:
        return {"tracker_records": self.server.records() if self.server else 0,
                "tracker_killed": self.killed}
