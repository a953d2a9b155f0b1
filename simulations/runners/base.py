"""What a runner does: place nodes somewhere (this process, child processes, network
namespaces), give the engine an ``ImplNode`` handle for each, and clean everything up."""

from __future__ import annotations

import abc
from pathlib import Path

from simulations.config import SimConfig
from simulations.impls import Impl, ImplNode
from simulations.netmodel import NetModel

__all__ = ["Runner", "RunnerUnavailable"]


class RunnerUnavailable(RuntimeError):
    """The runner cannot work on this machine (e.g. no root for namespaces)."""


class Runner(abc.ABC):
    """Owns every process, namespace and temp file it creates; ``close`` removes all."""

    name = "?"
    #: how file fetches travelled: "tls", "plaintext" (kadshare-node's answer), or
    #: "none" when the runner's nodes do no gRPC transfers (results.json says which)
    transfers = "none"

    def __init__(self, cfg: SimConfig, impl: Impl, netmodel: NetModel, workdir: Path) -> None:
        self.cfg = cfg
        self.impl = impl
        self.netmodel = netmodel
        self.workdir = workdir

    @property
    def infra_host(self) -> str:
        """Address shared infrastructure (the tracker) binds to."""
        return "127.0.0.1"

    async def start(self) -> None:
        """Prepare the place nodes run in, then the impl's shared infrastructure."""
        await self.impl.setup(self.infra_host)

    @abc.abstractmethod
    async def spawn(self, idx: int) -> ImplNode:
        """A handle for new node ``idx`` (not yet started)."""

    async def close(self) -> None:
        """Stop everything this runner started. Must be safe to call twice."""
        await self.impl.teardown()
