"""TLS certificates bound to a node's Ed25519 identity (docs/SECURITY.md, "Transfers").

A peer serves gRPC with a fresh self-signed ECDSA P-256 certificate. The certificate
carries one extra, non-critical extension: the node's Ed25519 public key and its
signature over ``CONTEXT + SubjectPublicKeyInfo`` of the certificate's own key. So the
certificate says "the holder of this ECDSA key speaks for node N", signed by N's key.

A client fetches the certificate, checks that binding against the node id of the
provider record it found the peer through, then opens the gRPC channel trusting exactly
that certificate: the TLS handshake proves the peer holds the ECDSA private key, which an
impostor replaying the certificate does not have. ECDSA rather than Ed25519 in TLS
itself because gRPC's BoringSSL does not offer Ed25519 signatures in its handshake.

This module imports none of dht/, pserver/, pclient/; ``sign`` is any Ed25519 signer.

A client reads the certificate with a strict DER walk of the few fields it checks
(``identity_of``) instead of ``cryptography.x509``, whose import (with ``email`` and
``ipaddress``) is ~20-50 ms of every ``kadshare get``; the server side builds its
certificate with ``cryptography.x509``, imported there.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

#: Private-use OID of the identity extension (value: public key 32 B + signature 64 B).
IDENTITY_OID = "1.3.6.1.4.1.57264.1313.1"
CONTEXT = b"kadshare/tls-identity/1\n"
FETCH_TIMEOUT = 5.0


class PeerIdentityError(Exception):
    """A peer's TLS certificate does not prove the node identity a client expects."""


def tls_name(node_id_hex: str) -> str:
    """The DNS name in a node's certificate, checked by the TLS handshake too."""
    return f"kadshare-{node_id_hex}"


def _spki(cert_key: ec.EllipticCurvePublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class ServerCert:
    """PEM key and certificate for ``grpc.ssl_server_credentials``; ``der`` for hashing."""

    key_pem: bytes
    cert_pem: bytes
    der: bytes


def make_server_cert(
    public_key: bytes, sign: Callable[[bytes], bytes], node_id_hex: str
) -> ServerCert:
    """A fresh ECDSA key and a self-signed certificate bound to the Ed25519 identity."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    binding = public_key + sign(CONTEXT + _spki(key.public_key()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, tls_name(node_id_hex))])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(tls_name(node_id_hex))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(IDENTITY_OID), binding),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServerCert(
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        der=cert.public_bytes(serialization.Encoding.DER),
    )


def _oid(dotted: str) -> bytes:
    """The DER content octets of an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return bytes(out)


_IDENTITY = _oid(IDENTITY_OID)
_SAN = _oid("2.5.29.17")  # subjectAltName
_EC_KEY = _oid("1.2.840.10045.2.1")  # id-ecPublicKey
_SEQ, _INT, _OID, _BOOL, _OCTETS, _BITS = 0x30, 0x02, 0x06, 0x01, 0x04, 0x03
_DNS_NAME = 0x82  # GeneralName dNSName: [2] IMPLICIT IA5String


def _tlv(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``, which must end
    by ``end``. Strict DER: one-byte tags, definite minimal lengths."""
    if pos + 2 > end:
        raise ValueError("truncated")
    tag, first = der[pos], der[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tag")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 3 or pos + count > end or der[pos] == 0:
            raise ValueError("bad length")
        length = int.from_bytes(der[pos:pos + count], "big")
        pos += count
        if length < 0x80:
            raise ValueError("non-minimal length")
    if pos + length > end:
        raise ValueError("truncated")
    return tag, pos, pos + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of each element in
    ``der[start:end]``, which they must fill exactly."""
    out = []
    pos = start
    while pos < end:
        tag, c0, c1 = _tlv(der, pos, end)
        out.append((tag, pos, c0, c1))
        pos = c1
    return out


def _certificate_fields(der: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """(SubjectPublicKeyInfo element, extension id -> extnValue content) of a DER
    certificate, read positionally as RFC 5280 lays out ``TBSCertificate``."""
    tag, c0, c1 = _tlv(der, 0, len(der))
    if tag != _SEQ or c1 != len(der):
        raise ValueError("not one DER SEQUENCE")
    cert = _children(der, c0, c1)
    if len(cert) != 3 or cert[0][0] != _SEQ:
        raise ValueError("not a certificate")
    tbs = _children(der, cert[0][2], cert[0][3])
    i = 1 if tbs and tbs[0][0] == 0xA0 else 0  # [0] version
    # serial, signature algorithm, issuer, validity, subject, subjectPublicKeyInfo
    expect = [_INT, _SEQ, _SEQ, _SEQ, _SEQ, _SEQ]
    if [t[0] for t in tbs[i:i + 6]] != expect:
        raise ValueError("unexpected TBSCertificate layout")
    spki = tbs[i + 5]
    rest = tbs[i + 6:]
    while rest and rest[0][0] in (0x81, 0xA1, 0x82, 0xA2):  # issuer/subject unique ids
        rest = rest[1:]
    if len(rest) != 1 or rest[0][0] != 0xA3:
        raise ValueError("no extensions")
    seq = _children(der, rest[0][2], rest[0][3])
    if len(seq) != 1 or seq[0][0] != _SEQ:
        raise ValueError("malformed extensions")
    extensions: dict[bytes, bytes] = {}
    for tag, _e, x0, x1 in _children(der, seq[0][2], seq[0][3]):
        parts = _children(der, x0, x1) if tag == _SEQ else []
        if len(parts) == 3 and parts[1][0] == _BOOL:
            parts = [parts[0], parts[2]]
        if len(parts) != 2 or parts[0][0] != _OID or parts[1][0] != _OCTETS:
            raise ValueError("malformed extension")
        oid = der[parts[0][2]:parts[0][3]]
        if oid in extensions:
            raise ValueError("duplicate extension")
        extensions[oid] = der[parts[1][2]:parts[1][3]]
    return der[spki[1]:spki[3]], extensions


def _dns_names(san: bytes) -> list[str]:
    """The dNSName entries of a subjectAltName extension value."""
    tag, c0, c1 = _tlv(san, 0, len(san))
    if tag != _SEQ or c1 != len(san):
        raise ValueError("malformed subjectAltName")
    return [san[n0:n1].decode("ascii") for tag, _e, n0, n1 in _children(san, c0, c1)
            if tag == _DNS_NAME]


def _is_ec_key(spki: bytes) -> bool:
    """Whether a SubjectPublicKeyInfo is an elliptic-curve key with a BIT STRING."""
    _tag, c0, c1 = _tlv(spki, 0, len(spki))
    parts = _children(spki, c0, c1)
    if len(parts) != 2 or parts[0][0] != _SEQ or parts[1][0] != _BITS:
        return False
    alg = _children(spki, parts[0][2], parts[0][3])
    return bool(alg) and alg[0][0] == _OID and spki[alg[0][2]:alg[0][3]] == _EC_KEY


def identity_of(der: bytes) -> str:
    """The node id (hex) a DER certificate proves, or raise PeerIdentityError why not.

    The binding is checked over the certificate's SubjectPublicKeyInfo as it stands in
    the certificate (``make_server_cert`` writes the uncompressed point, the form it
    signs); the TLS handshake then proves the peer holds that key's private half."""
    try:
        spki, extensions = _certificate_fields(der)
        ec_key = _is_ec_key(spki)
    except (ValueError, IndexError) as exc:
        raise PeerIdentityError(f"its certificate is unreadable ({exc})") from exc
    raw = extensions.get(_IDENTITY)
    if raw is None:
        raise PeerIdentityError("its certificate carries no kadshare identity")
    if not ec_key or len(raw) != 96:
        raise PeerIdentityError("its certificate's identity binding is malformed")
    public_key, signature = raw[:32], raw[32:]
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, CONTEXT + spki)
    except (InvalidSignature, ValueError) as exc:
        raise PeerIdentityError("its certificate's identity signature is invalid") from exc
    node_id = hashlib.sha1(public_key).hexdigest()
    try:
        names = _dns_names(extensions.get(_SAN, b""))
    except (ValueError, IndexError, UnicodeDecodeError):
        names = []
    if tls_name(node_id) not in names:
        raise PeerIdentityError("its certificate's name does not match its identity")
    return node_id


async def _speaks_http(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` answers an HTTP/1 request (an HTTP server sits silent on a
    TLS ClientHello, waiting for the end of a request line)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(b"HEAD / HTTP/1.0\r\n\r\n")
        return (await asyncio.wait_for(reader.read(5), timeout)) == b"HTTP/"
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.transport.abort()


def der_to_pem(der: bytes) -> bytes:
    """PEM text of a DER certificate (what gRPC takes as root certificates)."""
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


async def fetch_certificate(host: str, port: int, timeout: float = FETCH_TIMEOUT) -> bytes:
    """The DER certificate a TLS server presents (not trusted yet: see ``identity_of``).

    Raises ``PeerIdentityError`` when the peer does not speak TLS, ``OSError`` when it
    cannot be reached."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # checked by identity_of, then by gRPC's handshake
    ctx.set_alpn_protocols(["h2"])
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname="kadshare"), timeout)
    except ssl.SSLError as exc:
        raise PeerIdentityError(
            "it does not speak TLS (a node started with --insecure-transfers?)") from exc
    except asyncio.TimeoutError as exc:
        if await _speaks_http(host, port):
            raise PeerIdentityError(
                "it answers plain HTTP, not gRPC: that looks like a REST port; give the "
                "peer's grpc_port (`kadshare status` against that peer shows it)") from exc
        raise OSError(f"TLS handshake timed out after {timeout:g} s") from exc
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    finally:
        # no TLS close_notify exchange: a gRPC server may never answer it (a graceful
        # close waited up to its timeout, ~1 s per provider)
        writer.transport.abort()
    if not der:
        raise PeerIdentityError("it presented no certificate")
    return bytes(der)
