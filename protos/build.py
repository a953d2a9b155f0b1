"""Generate the Python gRPC stubs from ``kadshare.proto`` with grpcio-tools.

``make protos`` runs it; importing ``protos`` runs it when the stubs are stale.
The output lands beside the ``.proto``; imports in the generated code are
package-relative (``from protos import``) because the include root is the folder
above ``protos/``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO = PACKAGE_DIR / "kadshare.proto"
OUTPUTS = [PACKAGE_DIR / "kadshare_pb2.py", PACKAGE_DIR / "kadshare_pb2_grpc.py"]


def stubs_are_current() -> bool:
    """True when every generated file exists and is newer than the ``.proto``."""
    source_mtime = PROTO.stat().st_mtime
    return all(out.exists() and out.stat().st_mtime >= source_mtime for out in OUTPUTS)


def generate() -> None:
    """Run protoc (from grpcio-tools) on the ``.proto``; raise if it fails."""
    from grpc_tools import protoc  # imported here: only the build needs it

    root = PACKAGE_DIR.parent
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        str(PROTO.relative_to(root)),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")


def ensure_stubs() -> None:
    """Generate the stubs unless they are already current."""
    if not stubs_are_current():
        generate()
