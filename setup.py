"""Build hook: generate the gRPC stubs from protos/kadshare.proto before packaging.

Everything else about the distribution lives in setup.cfg. The stubs are build
output (never committed), so a wheel or an editable install carries them and the
runtime does not need grpcio-tools.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUILD_SCRIPT = Path(__file__).resolve().parent / "protos" / "build.py"


class BuildWithStubs(build_py):
    """``build_py`` that runs protoc (grpcio-tools, a build requirement) first."""

    def run(self) -> None:
        # Loaded by path: importing the ``protos`` package needs the stubs it makes.
        spec = importlib.util.spec_from_file_location("kadshare_protos_build", BUILD_SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
