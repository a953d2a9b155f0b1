"""Share links: one string that names a file (or folder) and where to join the network.

``kadshare:file?id=<64 hex>&name=<name>&size=<bytes>&peer=<host:port>[&peer=...]``

``file`` may be ``folder`` (the id is then a folder manifest's). Values are
percent-encoded (UTF-8); ``peer`` is a DHT address (``[v6]:port`` for IPv6) and repeats,
1 to ``MAX_PEERS`` times. Parsing is strict -- an unknown or repeated key, a bad id,
size or address is refused with a reason -- so a typo never silently fetches something
else. Kept free of dht/pserver/pclient imports: both the node and the client use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from kadcommon.addr import AddressError, format_hostport, parse_hostport
from kadcommon.fileid import FileIdError, normalise_file_id
from kadcommon.merkle import MAX_SIZE

SCHEME = "kadshare"
KINDS = ("file", "folder")
MAX_PEERS = 8
MAX_NAME_CHARS = 1024
MAX_LINK_CHARS = 4096
_KEYS = {"id", "name", "size", "peer"}


class LinkError(ValueError):
    """A string that is not a well-formed kadshare link; the text says what is wrong."""


@dataclass(frozen=True)
class Link:
    """What a link carries. ``peers`` are (host, DHT port) bootstrap hints."""

    file_id: str
    name: str
    size: int
    peers: tuple[tuple[str, int], ...]
    kind: str = "file"

    def __str__(self) -> str:
        return format_link(self)


def is_link(text: object) -> bool:
    """True if ``text`` looks meant as a link (so a bad one gets the link's error)."""
    return isinstance(text, str) and text[:len(SCHEME) + 1].lower() == SCHEME + ":"


def format_link(link: Link) -> str:
    """The canonical string of ``link`` (checked: a link this returns parses back)."""
    _check(link)
    parts = [("id", link.file_id), ("name", link.name), ("size", str(link.size))]
    parts += [("peer", format_hostport(h, p)) for h, p in link.peers]
    query = "&".join(f"{k}={quote(v, safe='[]:')}" for k, v in parts)
    text = f"{SCHEME}:{link.kind}?{query}"
    if len(text) > MAX_LINK_CHARS:
        raise LinkError(f"link longer than {MAX_LINK_CHARS} characters")
    return text


def parse_link(text: str) -> Link:
    """The :class:`Link` in ``text``, else LinkError saying what is malformed."""
    if not isinstance(text, str):
        raise LinkError("a link is a string")
    text = text.strip()
    if len(text) > MAX_LINK_CHARS:
        raise LinkError(f"link longer than {MAX_LINK_CHARS} characters")
    if not is_link(text):
        raise LinkError(f"a link starts with {SCHEME}: (like {SCHEME}:file?id=...)")
    kind, sep, query = text[len(SCHEME) + 1:].partition("?")
    if kind not in KINDS:
        raise LinkError(f"link kind {kind!r} unknown: {SCHEME}:file?... or {SCHEME}:folder?...")
    if not sep or not query:
        raise LinkError("link has no ?id=...&name=...&size=...&peer=... part")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True,
                          encoding="utf-8", errors="strict", max_num_fields=4 + MAX_PEERS)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LinkError(f"link query is malformed: {exc}") from None
    fields: dict[str, str] = {}
    peers: list[tuple[str, int]] = []
    for key, value in pairs:
        if key not in _KEYS:
            raise LinkError(f"link has an unknown field {key!r} (known: id, name, size, peer)")
        if key == "peer":
            try:
                peers.append(parse_hostport(value))
            except AddressError as exc:
                raise LinkError(f"link peer {value!r} is not HOST:PORT: {exc}") from None
        elif key in fields:
            raise LinkError(f"link field {key!r} given twice")
        else:
            fields[key] = value
    for key in ("id", "name", "size"):
        if key not in fields:
            raise LinkError(f"link lacks its {key!r} field")
    try:
        file_id = normalise_file_id(fields["id"])
    except FileIdError as exc:
        raise LinkError(f"link id: {exc}") from None
    size_text = fields["size"]
    if not size_text.isascii() or not size_text.isdigit() or len(size_text) > 19:
        raise LinkError(f"link size must be a whole number of bytes, not {size_text!r}")
    link = Link(file_id, fields["name"], int(size_text), tuple(peers), kind)
    _check(link)
    return link


def _check(link: Link) -> None:
    if link.kind not in KINDS:
        raise LinkError(f"link kind must be one of {', '.join(KINDS)}")
    try:
        normalise_file_id(link.file_id)
    except FileIdError as exc:
        raise LinkError(f"link id: {exc}") from None
    if link.file_id != link.file_id.lower():
        raise LinkError("link id must be lowercase hex")
    if not 0 <= link.size <= MAX_SIZE:
        raise LinkError(f"link size out of range (0..{MAX_SIZE})")
    if not link.name or len(link.name) > MAX_NAME_CHARS:
        raise LinkError(f"link name must be 1..{MAX_NAME_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in link.name):
        raise LinkError("link name holds a control character")
    if not 1 <= len(link.peers) <= MAX_PEERS:
        raise LinkError(f"a link carries 1..{MAX_PEERS} peer addresses (HOST:DHT_PORT)")
    for host, port in link.peers:
        try:
            parse_hostport(format_hostport(host, port))
        except AddressError as exc:
            raise LinkError(f"link peer {host}:{port}: {exc}") from None
