"""Merkle file ids: the published test vectors and the definition they follow."""

from __future__ import annotations

import hashlib

import pytest

from kadcommon.merkle import (
    CHUNK_SIZE,
    ChunkHasher,
    chunk_count,
    file_id_from_leaves,
    file_id_of_bytes,
    file_id_of_path,
    hash_file,
    leaf_hash,
    leaves_match,
    leaves_of_bytes,
)

C = CHUNK_SIZE

#: (chunks, size, file id) of the file whose byte i is i % 251 (docs/PROTOCOL.md).
VECTORS = [
    (0, 0, "c6c0aa07f27493d2f2e5cff56c890a353a20086d6c25ec825128e12ae752b2d9"),
    (1, 1, "ee8acb9cb20eaf4b807ef586e552774d803cc3dd837bf26e9f509500cc2604bd"),
    (1, C, "40efa1031d506bb2134825bb62b04d0790500eebef896ef18cb6326dffb29526"),
    (2, C + 1, "abeb509e284d23422e12acfe9468c0123e36eafb10115c7ec66f3bbd88cb0446"),
    (3, 3 * C, "7f6da00e03c74fb128fa83b48e90c1e55c8e8698477246773dcf43d37568e91e"),
    (4, 4 * C, "d8d1384d1c5fa2db62572f7febf6a003654455d28faa69f1d7dd9dcf149f5fde"),
    (5, 4 * C + 1, "2881d677c8a8d7b25cf8e1795d329f7454a07dfd7d734339ad68e110cf1f1337"),
    (8, 8 * C, "924b10ae0e710b97c8ded18b2af038a2f17512ce01d7fec92c02435fa8c656e3"),
    (9, 8 * C + 1, "8c8a39a8ac3edba384771493e7087d6d45630c2c2f8d9ef56514973e3b4c2c71"),
]


@pytest.fixture(scope="module")
def pattern() -> bytes:
    return bytes(i % 251 for i in range(9 * C))


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


@pytest.mark.parametrize(("chunks", "size", "expected"), VECTORS)
def test_vectors(pattern: bytes, chunks: int, size: int, expected: str, tmp_path) -> None:
    data = pattern[:size]
    assert chunk_count(size) == chunks
    assert file_id_of_bytes(data) == expected
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_id_of_path(path) == expected  # the streaming reader agrees
    hasher = ChunkHasher()
    for i in range(0, size, 300_000):  # pieces that straddle chunk edges
        hasher.update(data[i : i + 300_000])
    assert hasher.finish() == expected


def test_definition_by_hand(pattern: bytes) -> None:
    """Three chunks spelled out: tagged leaves, zero pad to four, tagged nodes, size bound."""
    data = pattern[: 2 * C + 7]
    a, b, c = (_h(b"\x00", data[i : i + C]) for i in range(0, len(data), C))
    root = _h(b"\x01", _h(b"\x01", a, b), _h(b"\x01", c, bytes(32)))
    want = _h(b"\x02", len(data).to_bytes(8, "big"), root).hex()
    assert file_id_of_bytes(data) == want


def test_empty_and_single_chunk_definitions() -> None:
    assert file_id_of_bytes(b"") == _h(b"\x02", bytes(8), bytes(32)).hex()
    assert file_id_of_bytes(b"x") == _h(b"\x02", (1).to_bytes(8, "big"), leaf_hash(b"x")).hex()
    assert leaf_hash(b"x") == _h(b"\x00x")


def test_a_lying_chunk_list_does_not_match(pattern: bytes) -> None:
    data = pattern[: 3 * C]
    leaves = leaves_of_bytes(data)
    fid = file_id_of_bytes(data)
    assert leaves_match(fid, len(data), leaves)
    wrong = [leaves[0], leaf_hash(b"evil"), leaves[2]]
    assert not leaves_match(fid, len(data), wrong)
    assert not leaves_match(fid, len(data) - 1, leaves)  # size is bound too
    assert not leaves_match(fid, len(data), leaves[:2])  # count must fit the size
    assert not leaves_match(fid, len(data), [*leaves[:2], b"short"])


def test_inner_node_cannot_pass_for_a_leaf(pattern: bytes) -> None:
    """Without tags, the two leaves' parent would be a valid one-chunk tree (second preimage)."""
    data = pattern[: 2 * C]
    leaves = leaves_of_bytes(data)
    fid = file_id_of_bytes(data)
    parent = _h(b"\x01", *leaves)
    assert not leaves_match(fid, 1, [parent])
    with pytest.raises(ValueError):
        file_id_from_leaves(5, [])


def test_hash_file_returns_the_leaves(pattern: bytes, tmp_path) -> None:
    path = tmp_path / "g.bin"
    path.write_bytes(pattern[: C + 3])
    fid, leaves, st = hash_file(path)
    assert leaves == tuple(leaves_of_bytes(pattern[: C + 3])) and st.st_size == C + 3
    assert fid == file_id_of_bytes(pattern[: C + 3])
