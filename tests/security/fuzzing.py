"""Shared by the fuzz tests: their time budget (the suite's 180 s default, or hours for
the long profile) and the genuine records they mutate."""

import time

import pytest
from hypothesis import settings

from dht.identity import Identity
from dht.records import encode_record, make_keyword, make_provider, make_withdrawal


def budget() -> pytest.MarkDecorator:
    """A pytest-timeout mark scaled to the active hypothesis profile's example count."""
    examples = settings.default.max_examples
    return pytest.mark.timeout(max(180, examples // 10))


def genuine_records(owner: Identity, file_id: str, name: str, grpc: str, ttl: int,
                    withdrawal: bool = False) -> list[bytes]:
    """A provider and a keyword record of ``name`` (and a withdrawal), issued now."""
    now = time.time()
    word = name.split()[0]
    records = [
        make_provider(owner, file_id, name, 4096, grpc, ttl=ttl, issued_at=now),
        make_keyword(owner, word, file_id, name, 4096, ttl=ttl, issued_at=now),
    ]
    if withdrawal:
        records.append(make_withdrawal(owner, "file:" + file_id, file_id, ttl=ttl, issued_at=now))
    return [encode_record(r) for r in records]
