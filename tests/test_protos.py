"""The gRPC stubs are build output: they must match what protoc makes of the .proto now."""

from __future__ import annotations

from pathlib import Path

import pytest

from protos import build


@pytest.mark.parametrize("name", ["kadshare_pb2.py", "kadshare_pb2_grpc.py"])
def test_built_stubs_match_the_proto(tmp_path: Path, name: str) -> None:
    build.generate(out_root=tmp_path)
    fresh = (tmp_path / "protos" / name).read_bytes()
    built = (build.PACKAGE_DIR / name).read_bytes()
    assert built == fresh, f"protos/{name} is stale: run `make protos`"


def test_runtime_does_not_need_grpcio_tools() -> None:
    """The stubs import where the build-time generator cannot be imported at all."""
    import subprocess
    import sys

    code = "import sys; sys.modules['grpc_tools'] = None; import protos, pserver, pclient"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
