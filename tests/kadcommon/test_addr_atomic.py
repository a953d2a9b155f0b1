"""kadcommon's address parser and atomic writer, as their callers rely on them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kadcommon.addr import AddressError, format_hostport, parse_hostport
from kadcommon.atomic import write_atomic


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8468", ("127.0.0.1", 8468)),
        ("peer.example:1", ("peer.example", 1)),
        ("[::1]:65535", ("::1", 65535)),
    ],
)
def test_parses_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected
    assert parse_hostport(format_hostport(*expected)) == expected


@pytest.mark.parametrize(
    "text",
    ["", "8468", "host", ":80", "host:", "host:0", "host:65536", "host:08", "host:+1",
     "::1:80", "[zz]:1", "ho st:80", "host:٣", "x" * 400 + ":1"],
)
def test_rejects_what_is_not_host_port(text: str) -> None:
    with pytest.raises(AddressError):
        parse_hostport(text)


def test_port_zero_only_when_asked() -> None:
    assert parse_hostport("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)


def test_atomic_write_replaces_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "token"
    target.write_bytes(b"old")
    write_atomic(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "node.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]  # the failure under test
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["node.json"]
