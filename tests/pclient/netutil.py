"""A small network of real in-process peers on loopback, for client tests.

``start_net(tmp, shares)`` starts one peer per entry of ``shares`` (a mapping of file
name to bytes, shared by that peer) and one more that shares nothing; the client talks
to that last peer's REST port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pserver.config import NodeConfig
from pserver.node import Node

PLAGE = "Plage à Nice.jpg"  # one photo under two names, as friends rename copies
COPY = "nice beach copy.jpg"


@dataclass
class Net:
    nodes: list[Node]
    url: str
    tmp: Path

    def grpc(self, i: int) -> str:
        return f"127.0.0.1:{self.nodes[i].info['grpc_port']}"

    def rest(self, i: int) -> str:
        return f"http://127.0.0.1:{self.nodes[i].info['rest_port']}"

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop(graceful=False)


async def start_net(tmp: Path, shares: list[dict[str, bytes]], **config: object) -> Net:
    """Peers sharing ``shares`` plus an empty one (the client's node, last)."""
    nodes: list[Node] = []
    try:
        for i, files in enumerate([*shares, {}]):
            share = tmp / f"share{i}"
            share.mkdir()
            for name, data in files.items():
                (share / name).write_bytes(data)
            boot = (("127.0.0.1", nodes[0].info["dht_port"]),) if nodes else ()
            nodes.append(await Node.start(NodeConfig(
                data_dir=tmp / f"data{i}", share_dir=share, bootstrap=boot,
                **config)))  # type: ignore[arg-type]
    except BaseException:
        for node in nodes:
            await node.stop(graceful=False)
        raise
    return Net(nodes, f"http://127.0.0.1:{nodes[-1].info['rest_port']}", tmp)


async def until(predicate: Callable[[], Awaitable[bool]], what: str, tries: int = 100,
                pause: float = 0.2) -> None:
    """Poll (bounded) until ``predicate`` holds; fail naming ``what`` otherwise."""
    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(pause)
    raise AssertionError(f"never happened: {what}")
