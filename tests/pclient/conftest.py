"""Fixtures of the client tests: a random file and faulty providers on real ports."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.pclient.provider import Behaviour, FaultyProvider

FILE_SIZE = 2 * 1024 * 1024 + 12345  # 33 chunks of 64 KiB, the last one short


@pytest.fixture
def shared_file(tmp_path: Path) -> Path:
    """A 2 MiB file of seeded random bytes."""
    rng = random.Random(5)
    path = tmp_path / "share" / "holiday photos.bin"
    path.parent.mkdir()
    path.write_bytes(rng.randbytes(FILE_SIZE))
    return path


@pytest.fixture
def file_id(shared_file: Path) -> str:
    return hashlib.sha256(shared_file.read_bytes()).hexdigest()


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
