"""Security of the gRPC listener: TLS bound to the node identity, the network gate.

``ServerSecurity`` is built once at start-up: a fresh certificate from
``kadcommon.tlsid`` (unless ``--insecure-transfers``) and, in a closed network, an
interceptor refusing every call without this network's token for this certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from kadcommon.netkey import METADATA_KEY, NetworkKey
from kadcommon.tlsid import ServerCert, make_server_cert

log = logging.getLogger(__name__)

DENIED = ("this peer belongs to a closed network: the client's network key is missing "
          "or different (--network-key / KADSHARE_NETWORK_KEY)")


class NetworkGate(grpc.aio.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) calls that lack a valid network token."""

    def __init__(self, netkey: NetworkKey, cert_der: bytes) -> None:
        self.netkey = netkey
        self.cert_der = cert_der
        self.refused = 0

    def _allowed(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == METADATA_KEY and isinstance(value, str):
                return self.netkey.accepts(value, self.cert_der)
        return False

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or self._allowed(handler_call_details):
            return handler
        self.refused += 1
        if self.refused == 1:
            log.info("refused a gRPC call without this network's key (further ones counted)")

        async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED)

        kinds = (("unary_unary", grpc.unary_unary_rpc_method_handler),
                 ("unary_stream", grpc.unary_stream_rpc_method_handler),
                 ("stream_unary", grpc.stream_unary_rpc_method_handler),
                 ("stream_stream", grpc.stream_stream_rpc_method_handler))
        for attr, make in kinds:
            if getattr(handler, attr, None) is not None:
                return make(deny, request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        return handler


@dataclass
class ServerSecurity:
    """What the gRPC listener needs: a certificate (None = plaintext) and a gate."""

    cert: ServerCert | None
    netkey: NetworkKey | None = None

    @classmethod
    def create(cls, public_key: bytes, sign: Callable[[bytes], bytes], node_id_hex: str,
               *, tls: bool = True, netkey: NetworkKey | None = None) -> ServerSecurity:
        cert = make_server_cert(public_key, sign, node_id_hex) if tls else None
        return cls(cert, netkey)

    @property
    def mode(self) -> str:
        """``tls`` or ``plaintext``: what REST status and node.json report."""
        return "tls" if self.cert is not None else "plaintext"

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        if self.netkey is None:
            return []
        return [NetworkGate(self.netkey, self.cert.der if self.cert else b"")]

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Bind ``address`` with TLS (or without, if plaintext); the bound port."""
        if self.cert is None:
            return server.add_insecure_port(address)
        creds = grpc.ssl_server_credentials([(self.cert.key_pem, self.cert.cert_pem)])
        return server.add_secure_port(address, creds)
