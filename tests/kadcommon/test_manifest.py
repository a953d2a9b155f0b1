"""Folder manifests: canonical signed bytes round-trip; unsafe or forged ones are refused."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from kadcommon.manifest import FileEntry, Manifest, ManifestError, check_path, decode, sign

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
FID = "cd" * 32
TREE = Manifest("Vacances été", (
    FileEntry("a.txt", 3, FID),
    FileEntry("sous dossier/b.bin", 0, FID),
    FileEntry("sous dossier/deep/c", 10, "ef" * 32),
), ("sous dossier", "sous dossier/deep", "vide"))


def resigned(doc: dict) -> bytes:
    """``doc`` re-signed by KEY, as a hostile sharer would sign what it likes."""
    unsigned = {k: v for k, v in doc.items() if k != "sig"}
    body = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    doc = {**unsigned, "sig": KEY.sign(body.encode()).hex()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_round_trip_and_canonical() -> None:
    data = sign(TREE, PUB, KEY.sign)
    got = decode(data)
    assert (got.name, set(got.files), set(got.dirs)) == (TREE.name, set(TREE.files),
                                                          set(TREE.dirs))
    assert got.total_size == 13
    assert sign(Manifest(TREE.name, tuple(reversed(TREE.files)), TREE.dirs), PUB,
                KEY.sign) == data


def test_tampered_manifest_fails_its_signature() -> None:
    doc = json.loads(sign(TREE, PUB, KEY.sign))
    doc["files"][0]["size"] = 4
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(ManifestError, match="signature"):
        decode(data)


def test_non_canonical_bytes_refused() -> None:
    data = sign(TREE, PUB, KEY.sign)
    with pytest.raises(ManifestError, match="canonical"):
        decode(json.dumps(json.loads(data), indent=1, sort_keys=True,
                          ensure_ascii=False).encode())


@pytest.mark.parametrize(("path", "reason"), [
    ("../evil", "'..'"),
    ("a/../../evil", "'..'"),
    ("/etc/passwd", "absolute"),
    ("C:/Windows/x", "absolute"),
    ("a//b", "empty"),
    ("a/./b", "'.'"),
    ("a\\..\\b", "backslash"),
    (".ssh/authorized_keys", "hidden"),
    ("a/\x00b", "control"),
    ("x" * 256, "255 bytes"),
    ("a/" * 2100 + "b", "4096"),
    (" lead", "white space"),
])
def test_unsafe_paths_refused_even_when_validly_signed(path: str, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason):
        check_path(path)
    doc = json.loads(sign(TREE, PUB, KEY.sign))
    doc["files"][0]["path"] = path
    with pytest.raises(ManifestError, match=reason):
        decode(resigned(doc))


def test_case_twins_and_files_over_folders_refused() -> None:
    with pytest.raises(ManifestError, match="only by case"):
        sign(Manifest("f", (FileEntry("Read.me", 1, FID), FileEntry("read.ME", 1, FID))), PUB,
             KEY.sign)
    with pytest.raises(ManifestError, match="inside a file"):
        sign(Manifest("f", (FileEntry("a", 1, FID), FileEntry("A/b", 1, FID))), PUB, KEY.sign)
    with pytest.raises(ManifestError, match="'..'"):
        sign(Manifest("..", ()), PUB, KEY.sign)


@pytest.mark.parametrize("data", [
    b"", b"\xff", b"[]", b'{"format":"x"}', b"not json",
    b'{"dirs":[],"files":[],"format":"kadshare-folder/1","name":"n","sig":"zz","signer":""}',
])
def test_garbage_refused(data: bytes) -> None:
    with pytest.raises(ManifestError):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_manifest_error(data: bytes) -> None:
    try:
        decode(data)
    except ManifestError:
        pass


parts = st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=0x2FF,
                                       blacklist_characters="\\/"), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(parts, min_size=1, max_size=3).map("/".join), max_size=8,
                unique_by=str.casefold))
def test_generated_trees_round_trip(paths: list[str]) -> None:
    files = tuple(FileEntry(p, i, FID) for i, p in enumerate(paths))
    try:
        data = sign(Manifest("tree", files), PUB, KEY.sign)
    except ManifestError:
        return  # e.g. a file where another needs a folder
    assert set(decode(data).files) == set(files)
