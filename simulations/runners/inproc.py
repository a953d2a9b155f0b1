"""inproc: every node in this process and event loop, real UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio

from simulations.impls import ImplNode
from simulations.runners.base import Runner

__all__ = ["InprocRunner"]


class InprocRunner(Runner):
    """Nodes are plain objects; the NetModel wraps their datagram endpoints directly."""

    name = "inproc"

    async def start(self) -> None:
        self.netmodel.install(asyncio.get_running_loop())
        await super().start()

    async def spawn(self, idx: int) -> ImplNode:
        params = {**self.impl.node_params(), "intervals": self.cfg.intervals}
        return self.impl.new_node(idx, "127.0.0.1", params)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self.netmodel.uninstall()
