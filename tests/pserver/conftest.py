"""Fixtures of the pserver suite: in-process peers on 127.0.0.1 with port 0."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from dht import DhtConfig
from pserver.config import NodeConfig
from pserver.node import Node

HTTP_TIMEOUT = 20.0


def node_config(base: Path, **options: object) -> NodeConfig:
    share = base / "share"
    share.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, object] = {
        "data_dir": base / "data",
        "share_dir": share,
        "scan_interval": 0.2,
        "dht_config": DhtConfig.for_tests(),
    }
    defaults.update(options)
    return NodeConfig(**defaults)  # type: ignore[arg-type]


class Peers:
    """Starts in-process nodes and stops them all at the end of a test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []
        self.count = 0

    async def start(
        self, files: dict[str, bytes] | None = None, *, base: Path | None = None,
        join: Node | None = None, **options: object,
    ) -> Node:
        if base is None:
            base = self.root / f"peer{self.count}"
            self.count += 1
        config = node_config(base, **options)
        for name, data in (files or {}).items():
            path = config.share_dir / name  # type: ignore[operator]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if join is not None:
            config = dataclasses.replace(
                config, bootstrap=(("127.0.0.1", int(join.info["dht_port"])),)
            )
        node = await Node.start(config)
        self.nodes.append(node)
        return node

    async def stop_all(self) -> None:
        await asyncio.gather(*(n.stop(graceful=False) for n in self.nodes),
                             return_exceptions=True)


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[Peers]:
    group = Peers(tmp_path)
    try:
        yield group
    finally:
        await group.stop_all()


def rest_url(node: Node) -> str:
    return f"http://127.0.0.1:{node.info['rest_port']}"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        yield client


async def eventually(check: Callable[[], Awaitable[bool]], tries: int = 150,
                     pause: float = 0.2) -> None:
    """Poll ``check`` until it is true (bounded: ``tries`` x ``pause``)."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(pause)
    raise AssertionError("condition never became true")
