"""Closed networks: a shared network key (like IPFS's swarm key), docs/SECURITY.md.

Key file: one line of 64 hex characters (32 random bytes); blank lines and lines
starting with ``#`` are ignored. Make one with ``kadshare-node --gen-network-key FILE``
(or ``python3 -c 'import secrets; print(secrets.token_hex(32))' > FILE``).

Two keys are derived from it, one per use, so a tag of one kind is never valid as the
other: every DHT datagram carries a 16-byte HMAC-SHA256 tag (a datagram without a valid
tag is dropped and counted), and every gRPC call carries a token
HMAC(key, server certificate) in its metadata, sent inside TLS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from kadcommon.atomic import write_atomic

TAG_LEN = 16
KEY_LEN = 32
#: gRPC metadata key carrying the network token
METADATA_KEY = "kadshare-network"


class NetworkKeyError(ValueError):
    """The network key file is missing, unreadable or not 64 hex characters."""


def parse_key_text(text: str) -> bytes:
    """The 32 key bytes of a key file's text."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(lines) != 1:
        raise NetworkKeyError("expected exactly one line of 64 hex characters")
    try:
        raw = bytes.fromhex(lines[0])
    except ValueError:
        raise NetworkKeyError("the key line is not hex") from None
    if len(raw) != KEY_LEN:
        raise NetworkKeyError(f"the key is {len(raw)} bytes, expected {KEY_LEN}")
    return raw


def load_key(path: Path | str) -> bytes:
    """Read and parse a key file (``NetworkKeyError`` says what is wrong with it)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise NetworkKeyError(f"cannot read network key {path}: {exc}") from exc
    try:
        return parse_key_text(text)
    except NetworkKeyError as exc:
        raise NetworkKeyError(f"network key {path}: {exc}") from None


def generate_key_file(path: Path | str) -> None:
    """Write a fresh key file (mode 0600); refuse to overwrite an existing one."""
    path = Path(path)
    if path.exists():
        raise NetworkKeyError(f"{path} exists; not overwriting a network key")
    text = "# kadshare network key: share it only with the network's members\n"
    write_atomic(path, (text + secrets.token_hex(KEY_LEN) + "\n").encode(), mode=0o600)


class NetworkKey:
    """Per-use keys derived from one network key."""

    __slots__ = ("_dht", "_grpc", "fingerprint")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LEN:
            raise NetworkKeyError(f"network key must be {KEY_LEN} bytes")
        self._dht = hmac.digest(key, b"kadshare/network/dht/1", "sha256")
        self._grpc = hmac.digest(key, b"kadshare/network/grpc/1", "sha256")
        #: short public name of the network (logs, status): not enough to derive the key
        self.fingerprint = hmac.digest(key, b"kadshare/network/name/1", "sha256")[:4].hex()

    def seal(self, datagram: bytes) -> bytes:
        """``datagram`` followed by its tag."""
        return datagram + hmac.digest(self._dht, datagram, "sha256")[:TAG_LEN]

    def open(self, sealed: bytes) -> bytes | None:
        """The datagram if its tag is valid, else None."""
        if len(sealed) < TAG_LEN:
            return None
        body, tag = bytes(sealed[:-TAG_LEN]), bytes(sealed[-TAG_LEN:])
        good = hmac.digest(self._dht, body, "sha256")[:TAG_LEN]
        return body if hmac.compare_digest(tag, good) else None

    def grpc_token(self, server_cert_der: bytes) -> str:
        """The token a client sends to the server holding that certificate (b"" when
        transfers are plaintext: then the token is the same for every server)."""
        digest = hashlib.sha256(server_cert_der).digest()
        return hmac.digest(self._grpc, digest, "sha256").hex()

    def accepts(self, token: str, server_cert_der: bytes) -> bool:
        """Whether ``token`` is this network's token for that certificate."""
        return hmac.compare_digest(token.encode("ascii", "replace"),
                                   self.grpc_token(server_cert_der).encode("ascii"))
