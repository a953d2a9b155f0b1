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
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

#: Private-use OID of the identity extension (value: public key 32 B + signature 64 B).
IDENTITY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1313.1")
CONTEXT = b"kadshare/tls-identity/1\n"
FETCH_TIMEOUT = 5.0


class PeerIdentityError(Exception):
    """A peer's TLS certificate does not prove the node identity a client expects."""


def tls_name(node_id_hex: str) -> str:
    """The DNS name in a node's certificate, checked by the TLS handshake too."""
    return f"kadshare-{node_id_hex}"


def _spki(cert_key: ec.EllipticCurvePublicKey) -> bytes:
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
        .add_extension(x509.UnrecognizedExtension(IDENTITY_OID, binding), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServerCert(
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        der=cert.public_bytes(serialization.Encoding.DER),
    )


def identity_of(der: bytes) -> str:
    """The node id (hex) a DER certificate proves, or raise PeerIdentityError why not."""
    try:
        with warnings.catch_warnings():  # a peer's odd certificate is not the user's concern
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
        binding = cert.extensions.get_extension_for_oid(IDENTITY_OID).value
        cert_key = cert.public_key()
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise PeerIdentityError("its certificate carries no kadshare identity") from exc
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        # x509 reads fields lazily: a peer's certificate can fail on any of them
        raise PeerIdentityError(f"its certificate is unreadable ({exc})") from exc
    raw = getattr(binding, "value", b"")
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or len(raw) != 96:
        raise PeerIdentityError("its certificate's identity binding is malformed")
    public_key, signature = raw[:32], raw[32:]
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, CONTEXT + _spki(cert_key))
    except (InvalidSignature, ValueError) as exc:
        raise PeerIdentityError("its certificate's identity signature is invalid") from exc
    node_id = hashlib.sha1(public_key).hexdigest()
    if tls_name(node_id) not in names.get_values_for_type(x509.DNSName):
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
