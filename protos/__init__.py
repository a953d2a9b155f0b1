"""The wire contract for transfers: ``kadshare.proto`` and the stubs generated from it.

Stubs are produced by the build (``make protos``); importing this package
generates them first if they are missing or older than the ``.proto``.
"""

from protos.build import ensure_stubs

ensure_stubs()

from protos import kadshare_pb2, kadshare_pb2_grpc  # noqa: E402

__all__ = ["kadshare_pb2", "kadshare_pb2_grpc"]
