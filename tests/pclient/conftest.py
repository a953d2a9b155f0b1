"""Fixtures of the client tests: a random file and faulty providers on real ports."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kadcommon.merkle import file_id_of_bytes
from pclient import Client
from tests.pclient.netutil import COPY, PLAGE, start_net, until
from tests.pclient.provider import Behaviour, FaultyProvider

FILE_SIZE = 6 * 1024 * 1024 + 12345  # 7 chunks of 1 MiB, the last one short


@pytest.fixture
def shared_file(tmp_path: Path) -> Path:
    """A 6 MiB file of seeded random bytes."""
    rng = random.Random(5)
    path = tmp_path / "share" / "holiday photos.bin"
    path.parent.mkdir()
    path.write_bytes(rng.randbytes(FILE_SIZE))
    return path


@pytest.fixture
def file_id(shared_file: Path) -> str:
    return file_id_of_bytes(shared_file.read_bytes())


@pytest.fixture
async def make_provider(
    shared_file: Path,
) -> AsyncIterator[Callable[..., object]]:
    """Factory: ``await make_provider(Behaviour(...))`` starts a provider; all stop at end."""
    started: list[FaultyProvider] = []

    async def factory(behaviour: Behaviour | None = None, **kwargs: object) -> FaultyProvider:
        provider = await FaultyProvider(shared_file, behaviour=behaviour, **kwargs).start()
        started.append(provider)
        return provider

    yield factory
    for provider in started:
        await provider.stop()


@pytest.fixture
async def photo_net(tmp_path: Path) -> AsyncIterator[Any]:
    """Peers 0 and 1 share the photo as COPY, 2 as PLAGE; the client talks to peer 3."""
    photo = random.Random(11).randbytes(300 * 1024 + 7)
    photo_id = file_id_of_bytes(photo)
    net = await start_net(tmp_path, [{COPY: photo}, {COPY: photo}, {PLAGE: photo}])
    net.photo, net.photo_id = photo, photo_id  # type: ignore[attr-defined]
    try:
        async with Client(net.url, timeout=30) as client:
            async def indexed() -> bool:
                return len(await client.providers(photo_id)) >= 3 and any(
                    h["name"] == PLAGE for h in await client.search("plage"))
            await until(indexed, "the photo indexed under both names")
        yield net
    finally:
        await net.stop()
