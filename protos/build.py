"""Generate the Python gRPC stubs from ``kadshare.proto`` with grpcio-tools.

``make protos`` and setup.py's build hook run it; the runtime never does.
The output lands beside the ``.proto``; imports in the generated code are
package-relative (``from protos import``) because the include root is the folder
above ``protos/``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO = PACKAGE_DIR / "kadshare.proto"
OUTPUTS = [PACKAGE_DIR / "kadshare_pb2.py", PACKAGE_DIR / "kadshare_pb2_grpc.py"]


def generate(out_root: Path | None = None) -> None:
    """Run protoc (from grpcio-tools) on the ``.proto``; raise if it fails.

    The files land in ``out_root/protos/`` (default: beside the ``.proto``); a test
    generates into a temporary root to check the built stubs are current.
    """
    from grpc_tools import protoc  # imported here: only the build needs it

    root = PACKAGE_DIR.parent
    out = out_root or root
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO.relative_to(root)),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")


if __name__ == "__main__":  # ``make protos``: run as a script, the package needs the stubs
    generate()
