"""The wire contract for transfers: ``kadshare.proto`` and the stubs generated from it.

The stubs are build output: ``pip install`` (setup.py's build hook) and ``make protos``
generate them; nothing generates them at import time, so the runtime needs no
grpcio-tools. ``tests/test_protos.py`` checks they match the ``.proto``.
"""

try:
    from protos import kadshare_pb2, kadshare_pb2_grpc
except ImportError as exc:  # a source checkout that was never built
    raise ImportError(
        "kadshare's gRPC stubs are missing: run `make protos` (or reinstall kadshare)"
    ) from exc

__all__ = ["kadshare_pb2", "kadshare_pb2_grpc"]
