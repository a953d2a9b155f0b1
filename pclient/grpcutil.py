"""gRPC helpers shared by the download engine and the library (uploads).

Channel options and a sentence a person understands for a failed call, so both speak
the same way about a peer.
"""

from __future__ import annotations

import grpc

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to a peer's gRPC port with kadshare's limits; no retries (a
    failing source is dropped and replaced instead)."""
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 0),
        ],
    )


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
