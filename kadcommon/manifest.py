"""Folder manifests: a folder as one signed, content-addressed file.

A manifest lists a folder's tree -- every file's relative path, size and Merkle id, and
every folder (so empty ones survive) -- and is signed by the Ed25519 key of the node that
shares it. Its bytes are a file like any other: their Merkle id is the folder's id, so a
folder is found, linked and fetched like a file, and the id binds the whole tree.

Encoding (canonical: one byte string per manifest, checked on decoding)::

    JSON, UTF-8, keys sorted, no spaces, non-ASCII kept as is:
    {"dirs": [path, ...], "files": [{"id": hex64, "path": p, "size": n}, ...],
     "format": "kadshare-folder/1", "name": folder name, "sig": hex128, "signer": hex64}

``dirs`` and ``files`` are sorted by path; ``sig`` is the Ed25519 signature by ``signer``
(raw public key) over the same encoding without the ``sig`` field. Every path is
checked like an upload name (``kadcommon.names``: no ``..``, ``.``, empty or hidden parts,
no absolute path, no backslash or control character, 255 bytes a part, 4096 in all) and
no two paths may differ only by case, so a manifest can never write outside the folder it
is unpacked into, nor clobber one of its own files on a case-insensitive file system.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kadcommon import names
from kadcommon.fileid import FileIdError, normalise_file_id
from kadcommon.merkle import MAX_SIZE
from kadcommon.names import UnsafeName, case_key

FORMAT = "kadshare-folder/1"
SUFFIX = ".kadfolder"
"""Manifests are shared as ``<folder name>.kadfolder``: searchable by the folder's words."""
MAX_ENTRIES = 100_000
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class ManifestError(ValueError):
    """Bytes or a tree that are not an acceptable folder manifest; the text says why."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    file_id: str


@dataclass(frozen=True)
class Manifest:
    """A folder's tree. ``signer`` is the raw Ed25519 public key (bytes), ``sig`` its
    signature (empty until signed)."""

    name: str
    files: tuple[FileEntry, ...]
    dirs: tuple[str, ...] = ()
    signer: bytes = b""
    sig: bytes = field(default=b"", repr=False)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def check_part(part: str) -> None:
    """One path component, checked like an upload name (``kadcommon.names``)."""
    try:
        names.check_part(part, "folder name")
    except UnsafeName as exc:
        raise ManifestError(str(exc)) from None


def check_path(path: str) -> tuple[str, ...]:
    """The components of a relative manifest path, else ManifestError."""
    try:
        return names.check_path(path, "manifest path")
    except UnsafeName as exc:
        raise ManifestError(str(exc)) from None


def check_tree(manifest: Manifest) -> None:
    """Every path valid, none twice (even by case), no file where a folder must be."""
    check_part(manifest.name)
    if len(manifest.files) + len(manifest.dirs) > MAX_ENTRIES:
        raise ManifestError(f"more than {MAX_ENTRIES} entries")
    folded: dict[str, str] = {}
    file_paths: set[str] = set()
    for path in [*manifest.dirs, *(f.path for f in manifest.files)]:
        check_path(path)
        key = case_key(path)
        if key in folded:
            raise ManifestError(f"paths {folded[key]!r} and {path!r} differ only by case "
                                "(or repeat)")
        folded[key] = path
    for entry in manifest.files:
        if not 0 <= entry.size <= MAX_SIZE:
            raise ManifestError(f"size of {entry.path!r} out of range")
        try:
            normalise_file_id(entry.file_id)
        except FileIdError as exc:
            raise ManifestError(f"id of {entry.path!r}: {exc}") from None
        file_paths.add(case_key(entry.path))
    for path in folded:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in file_paths:
                raise ManifestError(f"{folded[path]!r} lies inside a file of the manifest")
    if manifest.total_size > MAX_SIZE:
        raise ManifestError("folder larger than the largest file size")


def _body(manifest: Manifest, with_sig: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "name": manifest.name,
        "dirs": sorted(manifest.dirs),
        "files": [{"id": f.file_id.lower(), "path": f.path, "size": f.size}
                  for f in sorted(manifest.files, key=lambda f: f.path)],
        "signer": manifest.signer.hex(),
    }
    if with_sig:
        doc["sig"] = manifest.sig.hex()
    return doc


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(manifest: Manifest, public_key: bytes, signer: Callable[[bytes], bytes]) -> bytes:
    """The checked, signed, canonical bytes of ``manifest`` (its id is their Merkle id).

    ``signer`` signs with the Ed25519 key whose raw public key is ``public_key`` (a node's
    ``Identity.sign``, so the key never leaves its owner)."""
    check_tree(manifest)
    unsigned = Manifest(manifest.name, manifest.files, manifest.dirs, public_key)
    sig = signer(_canonical(_body(unsigned, with_sig=False)))
    signed = Manifest(manifest.name, manifest.files, manifest.dirs, public_key, sig)
    return _canonical(_body(signed, with_sig=True))


def decode(data: bytes) -> Manifest:
    """The manifest in ``data``: canonical, well-formed, every path safe, signature valid."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"not a folder manifest (not UTF-8 JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ManifestError(f"not a folder manifest (format is not {FORMAT!r})")
    if set(doc) != {"format", "name", "dirs", "files", "signer", "sig"}:
        raise ManifestError("manifest fields are not format, name, dirs, files, signer, sig")
    try:
        files = tuple(FileEntry(str(_typed(f["path"], str)), int(_typed(f["size"], int)),
                                str(_typed(f["id"], str)))
                      for f in _typed(doc["files"], list) if _typed(f, dict) and len(f) == 3)
        if len(files) != len(doc["files"]):
            raise ManifestError("a file entry has fields other than id, path, size")
        dirs = tuple(_typed(d, str) for d in _typed(doc["dirs"], list))
        manifest = Manifest(_typed(doc["name"], str), files, dirs,
                            bytes.fromhex(_typed(doc["signer"], str)),
                            bytes.fromhex(_typed(doc["sig"], str)))
    except (KeyError, ValueError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"malformed manifest: {exc}") from None
    check_tree(manifest)
    if _canonical(_body(manifest, with_sig=True)) != data:
        raise ManifestError("manifest is not in canonical form (sorted, no spaces)")
    try:
        Ed25519PublicKey.from_public_bytes(manifest.signer).verify(
            manifest.sig, _canonical(_body(manifest, with_sig=False)))
    except (ValueError, InvalidSignature):
        raise ManifestError("manifest signature does not verify") from None
    return manifest


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"manifest field of the wrong type ({type(value).__name__})")
    return value
