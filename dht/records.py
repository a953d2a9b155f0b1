"""Signed records: provider, keyword and withdrawal; canonical msgpack; Ed25519.

Wire form of every record is a msgpack array, canonical (re-encoding a decoded record
gives the same bytes, anything else is rejected)::

    provider:   [2, "p", file_id:bin32, node_id:bin20, public_key:bin32, grpc:str,
                 name:str, size:int, issued_at:float64, ttl:int, signature:bin64]
    keyword:    [2, "k", word:str, file_id:bin32, node_id:bin20, public_key:bin32,
                 name:str, size:int, issued_at:float64, ttl:int, signature:bin64]
    withdrawal: [2, "w", key_name:str, file_id:bin32, node_id:bin20, public_key:bin32,
                 issued_at:float64, ttl:int, signature:bin64]

Version 2: ``file_id`` is the Merkle id of ``kadcommon.merkle``. Version-1 records named
files by the SHA-256 of the whole content; the same bytes have another id now, so they
are refused (``InvalidRecord`` saying so) rather than pointing at the wrong file.

The signature covers ``b"kadshare/record/2\\n"`` followed by the encoding of the array
without its last element.  A record occupies the slot (node_id, file_id) of its key;
a newer record in a slot replaces the older, and a withdrawal is a newer record that
says "nothing here" (a tombstone kept until its own TTL ends).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TypeVar

import msgpack

from kadcommon.addr import AddressError, parse_hostport

from .clock import wall
from .config import DhtConfig
from .errors import InvalidRecord, RecordTooLarge
from .identity import Identity, node_id_for, verify_signature
from .keys import check_file_id, digest_key, file_key_name, is_node_id_hex, keyword_key_name
from .keywords import is_normal_word

VERSION = 2
SIGN_CONTEXT = b"kadshare/record/2\n"
OLD_VERSIONS = (1,)  # whole-file SHA-256 ids
MAX_GRPC_LEN = 262
MAX_SIZE = 2**63 - 1


@dataclass(frozen=True)
class ProviderRecord:
    """One peer's claim that it serves ``file_id`` at ``grpc`` (host:port)."""

    file_id: str
    node_id: str
    public_key: bytes
    grpc: str
    name: str
    size: int
    issued_at: float
    ttl: int
    signature: bytes
    #: A peer still downloading the file: it serves the chunks it has verified (its
    #: ``Have`` bitfield says which). Signed as a 12th array element ``true`` before
    #: the signature; a full provider's array has no such element (unchanged bytes).
    partial: bool = False

    kind = "p"

    @property
    def expires(self) -> float:
        """Unix time at which the record stops being valid."""
        return self.issued_at + self.ttl

    @property
    def key_name(self) -> str:
        return file_key_name(self.file_id)

    def signed_fields(self) -> list:
        """The fields the signature covers, in wire order."""
        return [
            VERSION, "p", bytes.fromhex(self.file_id), bytes.fromhex(self.node_id),
            self.public_key, self.grpc, self.name, self.size, float(self.issued_at), self.ttl,
            *([True] if self.partial else []),
        ]


@dataclass(frozen=True)
class KeywordRecord:
    """One publisher's entry under keyword ``word``: a file whose name contains it."""

    word: str
    file_id: str
    node_id: str
    public_key: bytes
    name: str
    size: int
    issued_at: float
    ttl: int
    signature: bytes

    kind = "k"

    @property
    def expires(self) -> float:
        return self.issued_at + self.ttl

    @property
    def key_name(self) -> str:
        return keyword_key_name(self.word)

    def signed_fields(self) -> list:
        """The fields the signature covers, in wire order."""
        return [
            VERSION, "k", self.word, bytes.fromhex(self.file_id), bytes.fromhex(self.node_id),
            self.public_key, self.name, self.size, float(self.issued_at), self.ttl,
        ]


@dataclass(frozen=True)
class Withdrawal:
    """Signed tombstone: the owner no longer provides ``file_id`` under ``key_name``."""

    key_name: str
    file_id: str
    node_id: str
    public_key: bytes
    issued_at: float
    ttl: int
    signature: bytes

    kind = "w"

    @property
    def expires(self) -> float:
        return self.issued_at + self.ttl

    def signed_fields(self) -> list:
        """The fields the signature covers, in wire order."""
        return [
            VERSION, "w", self.key_name, bytes.fromhex(self.file_id),
            bytes.fromhex(self.node_id), self.public_key, float(self.issued_at), self.ttl,
        ]


Record = ProviderRecord | KeywordRecord | Withdrawal


def storage_key(record: Record) -> bytes:
    """The 20-byte DHT key a record belongs under."""
    return digest_key(record.key_name)


#: (owner node id, file id): one live record per slot per key, in storage and in lookups.
Slot = tuple[str, str]


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def signed_message(record: Record) -> bytes:
    """The bytes the signature covers."""
    return SIGN_CONTEXT + _pack(record.signed_fields())


def encode_record(record: Record) -> bytes:
    """Canonical msgpack bytes of a record (signature last)."""
    return _pack([*record.signed_fields(), record.signature])


def _now() -> float:
    return wall()


_R = TypeVar("_R", ProviderRecord, KeywordRecord, Withdrawal)


def _sign(identity: Identity, unsigned: _R) -> _R:
    sig = identity.sign(signed_message(unsigned))
    return replace(unsigned, signature=sig)


def make_provider(
    identity: Identity, file_id: str, name: str, size: int, grpc: str, ttl: int,
    issued_at: float | None = None, partial: bool = False,
) -> ProviderRecord:
    """Build and sign a provider record (validates the arguments)."""
    rec = ProviderRecord(
        file_id=check_file_id(file_id), node_id=identity.node_id_hex,
        public_key=identity.public_key, grpc=grpc, name=name, size=size,
        issued_at=_now() if issued_at is None else float(issued_at), ttl=ttl, signature=b"",
        partial=bool(partial),
    )
    _check_fields(rec)
    return _sign(identity, rec)


def make_keyword(
    identity: Identity, word: str, file_id: str, name: str, size: int, ttl: int,
    issued_at: float | None = None,
) -> KeywordRecord:
    """Build and sign a keyword record."""
    rec = KeywordRecord(
        word=word, file_id=check_file_id(file_id), node_id=identity.node_id_hex,
        public_key=identity.public_key, name=name, size=size,
        issued_at=_now() if issued_at is None else float(issued_at), ttl=ttl, signature=b"",
    )
    _check_fields(rec)
    return _sign(identity, rec)


def make_withdrawal(
    identity: Identity, key_name: str, file_id: str, ttl: int,
    issued_at: float | None = None,
) -> Withdrawal:
    """Build and sign a withdrawal of this identity's record in (key_name, file_id)."""
    rec = Withdrawal(
        key_name=key_name, file_id=check_file_id(file_id), node_id=identity.node_id_hex,
        public_key=identity.public_key,
        issued_at=_now() if issued_at is None else float(issued_at), ttl=ttl, signature=b"",
    )
    _check_fields(rec)
    return _sign(identity, rec)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(rec: Record, max_name_bytes: int = 255) -> None:
    """Structural checks that need no key material or clock."""
    check_file_id(rec.file_id)
    if not is_node_id_hex(rec.node_id):
        raise InvalidRecord("node_id must be 40 lowercase hex characters")
    if not isinstance(rec.public_key, bytes) or len(rec.public_key) != 32:
        raise InvalidRecord("public_key must be 32 bytes")
    if not isinstance(rec.issued_at, float) or rec.issued_at != rec.issued_at:
        raise InvalidRecord("issued_at must be a finite float")
    if not (0 < rec.issued_at < 2**40):
        raise InvalidRecord("issued_at out of range")
    if not _is_int(rec.ttl) or rec.ttl < 1:
        raise InvalidRecord("ttl must be a positive int")
    if isinstance(rec, (ProviderRecord, KeywordRecord)):
        if not isinstance(rec.name, str) or not rec.name:
            raise InvalidRecord("name must be a non-empty string")
        if len(rec.name.encode("utf-8", "surrogatepass")) > max_name_bytes:
            raise InvalidRecord(f"name longer than {max_name_bytes} bytes")
        if any(ch in rec.name for ch in "/\\\x00"):
            raise InvalidRecord("name must not contain '/', '\\' or NUL")
        if not _is_int(rec.size) or not 0 <= rec.size <= MAX_SIZE:
            raise InvalidRecord("size must be an int >= 0")
    if isinstance(rec, ProviderRecord):
        if not isinstance(rec.grpc, str) or not _valid_hostport(rec.grpc):
            raise InvalidRecord(f"grpc must be 'host:port', got {rec.grpc!r:.80}")
    if isinstance(rec, KeywordRecord) and not is_normal_word(rec.word):
        raise InvalidRecord(f"keyword {rec.word!r:.60} is not a normalised word")
    if isinstance(rec, Withdrawal):
        if not isinstance(rec.key_name, str):
            raise InvalidRecord("key_name must be a string")
        if rec.key_name != file_key_name(rec.file_id):
            if not (rec.key_name.startswith("kw:") and is_normal_word(rec.key_name[3:])):
                raise InvalidRecord("withdrawal key_name must be file:<id> or kw:<word>")


def _valid_hostport(text: str) -> bool:
    if len(text) > MAX_GRPC_LEN:
        return False
    try:
        parse_hostport(text)
    except AddressError:
        return False
    return True


def decode_record(data: bytes, max_record_bytes: int = 1024) -> Record:
    """Parse canonical record bytes; raise InvalidRecord (never anything else)."""
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidRecord("record must be bytes")
    if len(data) > max_record_bytes:
        raise RecordTooLarge(f"record of {len(data)} bytes exceeds {max_record_bytes}")
    try:
        arr = msgpack.unpackb(
            bytes(data), raw=False, use_list=True, strict_map_key=True,
            max_array_len=16, max_map_len=0,
            max_str_len=max_record_bytes, max_bin_len=max_record_bytes, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types on garbage
        raise InvalidRecord(f"undecodable record: {type(exc).__name__}") from exc
    if isinstance(arr, list) and arr and _is_int(arr[0]) and arr[0] in OLD_VERSIONS:
        raise InvalidRecord(
            f"version-{arr[0]} record refused: its file id is a whole-file SHA-256; "
            f"this node speaks version {VERSION} (Merkle file ids), upgrade the sender"
        )
    if not isinstance(arr, list) or len(arr) < 3 or not _is_int(arr[0]) or arr[0] != VERSION:
        raise InvalidRecord(f"not a version-{VERSION} record array")
    kind = arr[1]
    try:
        if kind == "p" and len(arr) in (11, 12):
            if len(arr) == 12 and arr[10] is not True:
                raise InvalidRecord("a provider record's 12th field must be true (partial)")
            _, _, fid, nid, pk, grpc, name, size, iat, ttl = arr[:10]
            rec: Record = ProviderRecord(
                file_id=_hex(fid, 32), node_id=_hex(nid, 20), public_key=pk, grpc=grpc,
                name=name, size=size, issued_at=iat, ttl=ttl, signature=arr[-1],
                partial=len(arr) == 12,
            )
        elif kind == "k" and len(arr) == 11:
            _, _, word, fid, nid, pk, name, size, iat, ttl, sig = arr
            rec = KeywordRecord(
                word=word, file_id=_hex(fid, 32), node_id=_hex(nid, 20), public_key=pk,
                name=name, size=size, issued_at=iat, ttl=ttl, signature=sig,
            )
        elif kind == "w" and len(arr) == 9:
            _, _, key_name, fid, nid, pk, iat, ttl, sig = arr
            rec = Withdrawal(
                key_name=key_name, file_id=_hex(fid, 32), node_id=_hex(nid, 20),
                public_key=pk, issued_at=iat, ttl=ttl, signature=sig,
            )
        else:
            raise InvalidRecord("unknown record kind or wrong field count")
    except InvalidRecord:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"ill-shaped record: {exc}") from exc
    if not isinstance(rec.signature, bytes) or len(rec.signature) != 64:
        raise InvalidRecord("signature must be 64 bytes")
    _check_fields(rec, max_name_bytes=max_record_bytes)
    if encode_record(rec) != bytes(data):
        raise InvalidRecord("record encoding is not canonical")
    return rec


def _hex(value: object, length: int) -> str:
    if not isinstance(value, bytes) or len(value) != length:
        raise InvalidRecord(f"expected {length} raw bytes")
    return value.hex()


# Process-wide cache of verified signatures: verification is a pure function of the
# encoded bytes, and a lookup sees the same records from up to k nodes.
_VERIFIED: OrderedDict[bytes, None] = OrderedDict()
_VERIFIED_MAX = 8192


def verify(record: Record, config: DhtConfig, now: float | None = None) -> Record:
    """Check signature, id binding, sizes, TTL and clock; return the record or raise."""
    _check_fields(record, max_name_bytes=config.max_name_bytes)
    now = _now() if now is None else now
    if record.ttl > config.max_record_ttl:
        raise InvalidRecord(f"ttl {record.ttl} exceeds the maximum {config.max_record_ttl}")
    if record.issued_at > now + config.max_clock_skew:
        raise InvalidRecord("issued_at lies in the future beyond the allowed clock skew")
    if record.expires <= now:
        raise InvalidRecord("record has expired")
    encoded = encode_record(record)
    if len(encoded) > config.max_record_bytes:
        raise RecordTooLarge(f"record of {len(encoded)} bytes exceeds {config.max_record_bytes}")
    if node_id_for(record.public_key).hex() != record.node_id:
        raise InvalidRecord("node_id is not derived from public_key")
    digest = hashlib.sha256(encoded).digest()
    if digest in _VERIFIED:
        _VERIFIED.move_to_end(digest)
        return record
    if not verify_signature(record.public_key, record.signature, signed_message(record)):
        raise InvalidRecord("bad signature")
    _VERIFIED[digest] = None
    if len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.popitem(last=False)
    return record


def decode_and_verify(data: bytes, config: DhtConfig, now: float | None = None) -> Record:
    """decode_record then verify: what a storing node does with every record."""
    return verify(decode_record(data, config.max_record_bytes), config, now)
