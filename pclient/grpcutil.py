"""gRPC helpers shared by the download engine and the library (uploads).

``Dialer`` opens every channel to a peer: over TLS, trusting only the certificate the
peer proved to belong to the node id it was found as (``kadcommon.tlsid``), and with the
network token of a closed network (``kadcommon.netkey``). Plus a sentence a person
understands for a failed call, so the engine and the library speak the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from kadcommon.addr import AddressError, parse_hostport
from kadcommon.netkey import METADATA_KEY, NetworkKey, load_key
from kadcommon.tlsid import PeerIdentityError, der_to_pem, fetch_certificate, identity_of, tls_name

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),  # a failing source is dropped and replaced instead
]
#: the same variable kadshare-node reads: one setting for a machine's node and client
NETWORK_KEY_ENV = "KADSHARE_NETWORK_KEY"


class _Metadata(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor,
                grpc.aio.StreamUnaryClientInterceptor):
    """Adds one metadata pair (the network token) to every call on a channel."""

    def __init__(self, pair: tuple[str, str]) -> None:
        self.pair = pair

    def _details(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(tuple(d.metadata or ())), self.pair)
        return grpc.aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials,
                                          d.wait_for_ready)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def network_key_from_env(env: Mapping[str, str] | None = None) -> NetworkKey | None:
    """The closed network named by ``KADSHARE_NETWORK_KEY`` (a key file), if set."""
    path = (os.environ if env is None else env).get(NETWORK_KEY_ENV, "").strip()
    return NetworkKey(load_key(path)) if path else None


class Dialer:
    """Opens channels to peers; ``verify`` first proves who each peer is.

    ``expected`` maps a gRPC address to the node id of the provider record it came
    from: a peer there must prove that id. An address without one (given by hand) must
    still present a certificate bound to some node identity. ``tls=False`` is for nodes
    started with ``--insecure-transfers`` (their node's REST status says so)."""

    def __init__(self, expected: Mapping[str, str] | None = None, *, tls: bool = True,
                 netkey: NetworkKey | None = None, timeout: float = 5.0) -> None:
        self.expected = dict(expected or {})
        self.tls = tls
        self.netkey = netkey
        self.timeout = timeout
        self._certs: dict[str, tuple[bytes, str]] = {}  # address -> (DER, node id)

    async def _prove(self, address: str) -> None:
        if address in self._certs:
            return
        try:
            host, port = parse_hostport(address)
        except AddressError as exc:
            raise PeerIdentityError(f"bad address: {exc}") from None
        want = self.expected.get(address)
        der = await fetch_certificate(host, port, self.timeout)
        got = identity_of(der)
        if want is not None and got != want:
            raise PeerIdentityError(
                f"it is node {got[:12]}…, not node {want[:12]}… that signed the provider "
                "record naming this address (an impostor, or another node took the port)")
        self._certs[address] = (der, got)

    async def verify(self, addresses: Iterable[str]) -> dict[str, str]:
        """Prove each peer's identity (in parallel); returns {address: why refused}."""
        if not self.tls:
            return {}
        todo = list(dict.fromkeys(addresses))

        async def one(address: str) -> str:
            try:
                await self._prove(address)
            except (PeerIdentityError, OSError) as exc:
                return _why(exc)
            return ""

        reasons = await asyncio.gather(*(one(a) for a in todo))
        refused = {a: why for a, why in zip(todo, reasons, strict=True) if why}
        for address, why in refused.items():
            log.info("peer %s %s", address, why)
        return refused

    def node_id(self, address: str) -> str | None:
        """The node id a verified peer proved (None before ``verify`` or without TLS)."""
        entry = self._certs.get(address)
        return entry[1] if entry else None

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to a peer ``verify`` accepted (any peer when ``tls`` is off)."""
        entry = self._certs.get(address)
        interceptors = None
        if self.netkey is not None:
            token = self.netkey.grpc_token(entry[0] if entry else b"")
            interceptors = [_Metadata((METADATA_KEY, token))]
        if not self.tls:
            return grpc.aio.insecure_channel(address, options=OPTIONS, interceptors=interceptors)
        if entry is None:
            raise PeerIdentityError(f"{address} was not verified (call Dialer.verify first)")
        der, node_id = entry
        creds = grpc.ssl_channel_credentials(root_certificates=der_to_pem(der))
        options = [*OPTIONS, ("grpc.ssl_target_name_override", tls_name(node_id))]
        return grpc.aio.secure_channel(address, creds, options=options,
                                       interceptors=interceptors)

    async def open(self, address: str) -> grpc.aio.Channel:
        """``verify`` one address, then its channel; ``PeerIdentityError`` or ``OSError``."""
        if self.tls:
            await self._prove(address)
        return self.channel(address)

    async def try_open(self, address: str) -> tuple[grpc.aio.Channel | None, str]:
        """``open``, or (None, why) in words a person reads: the peer is proven when
        first used, so a dead spare costs nothing until it is needed."""
        try:
            return await self.open(address), ""
        except (PeerIdentityError, OSError) as exc:
            return None, _why(exc)


def _why(exc: Exception) -> str:
    if isinstance(exc, PeerIdentityError):
        return f"refused: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "unreachable (connection refused: nothing listens on that TCP port)"
    return f"unreachable ({unreachable_reason(str(exc))})"


def describe_rpc_error(exc: grpc.aio.AioRpcError) -> str:
    """A short reason a person understands for a failed gRPC call (no gRPC jargon)."""
    code = exc.code()
    details = (exc.details() or "").strip()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"unreachable ({unreachable_reason(details)})"
    if code == grpc.StatusCode.NOT_FOUND:
        return "does not share this file"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timed out"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if details.startswith("Received message larger than max"):
            return "sent a message larger than this client accepts"
        return f"refused: {details}" if details else "busy; try again later"
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return f"refused: {details}" if details else "refused"
    reason = code.name.lower().replace("_", " ")
    return f"{reason}: {details}" if details else reason


def unreachable_reason(details: str) -> str:
    """Why a gRPC channel could not connect, from C-core's details text."""
    if "http1.x server" in details:
        return ("it answers plain HTTP, not gRPC: that looks like a REST port; give the "
                "peer's grpc_port (`kadshare status` against that peer shows it)")
    if "Connection refused" in details:
        return "connection refused: nothing listens on that TCP port"
    if "DNS resolution failed" in details or "name resolution" in details.lower():
        return "cannot resolve the host name"
    if "Deadline" in details or "Timeout" in details:
        return "timed out"
    return "cannot connect"


def verified_credentials(
    address: str, expected: str | None = None, timeout: float = 5.0
) -> tuple[grpc.ChannelCredentials, list[tuple[str, Any]]]:
    """Blocking form of ``Dialer.verify`` for synchronous callers (tests, benchmarks):
    credentials and options of a TLS channel to the node at ``address``."""
    host, port = parse_hostport(address)
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, port), timeout=timeout))
    got = identity_of(der)
    if expected is not None and got != expected:
        raise PeerIdentityError(f"it is node {got[:12]}…, not node {expected[:12]}…")
    creds = grpc.ssl_channel_credentials(root_certificates=der_to_pem(der))
    return creds, [*OPTIONS, ("grpc.ssl_target_name_override", tls_name(got))]
