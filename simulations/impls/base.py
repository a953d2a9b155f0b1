"""The one small interface every design under test implements.

An ``Impl`` owns whatever shared infrastructure the design needs (the tracker server)
and makes ``ImplNode``s; the engine drives nodes only through ``ImplNode``'s six calls,
so the same trace runs unchanged against kadshare, plain kademlia and the tracker.
Lookups answer with *provider keys* (``host:port`` strings the provider announced);
the engine maps them back to node numbers to judge liveness.
"""

from __future__ import annotations

import abc
from typing import Any

from simulations.scenarios import FileSpec

__all__ = ["ImplNode", "Impl", "provider_key_for"]


def provider_key_for(idx: int, host: str) -> str:
    """The pseudo gRPC address node ``idx`` announces (unique per node in a run)."""
    return f"{host}:{10000 + idx % 50000}"


class ImplNode(abc.ABC):
    """One simulated peer of some design."""

    def __init__(self, idx: int, host: str, params: dict[str, Any]) -> None:
        self.idx = idx
        self.host = host
        self.params = params
        self.provider_key = provider_key_for(idx, host)
        self.addr: tuple[str, int] | None = None   # where others bootstrap to

    @abc.abstractmethod
    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        """Open sockets and join the network through ``bootstrap`` (empty = first)."""

    @abc.abstractmethod
    async def announce(self, f: FileSpec) -> None:
        """Make this node findable as a provider of ``f``."""

    @abc.abstractmethod
    async def lookup(self, f: FileSpec) -> list[str]:
        """Provider keys the network returns for ``f`` (may include dead ones)."""

    @abc.abstractmethod
    async def leave(self) -> None:
        """Graceful departure, the way this design's user would leave."""

    @abc.abstractmethod
    def crash(self) -> None:
        """Abrupt stop: no goodbye messages."""

    def records(self) -> int:
        """Index records this node stores for others (0 when it stores none)."""
        return 0

    #: False when this node's datagrams cannot be counted (a real kadshare-node process).
    counts_traffic: bool = True
    #: True when the node lives in another process and counts its own traffic.
    remote: bool = False

    async def fetch(self, f: FileSpec, providers: list[str]) -> bool | None:
        """Download ``f`` from ``providers`` and verify it; None when not supported."""
        return None

    async def refresh(self) -> None:  # noqa: B027 - optional hook
        """Update cached figures (records, traffic) of a remote node."""

    async def reset_counters(self) -> None:  # noqa: B027 - optional hook
        """Forget traffic counted so far (called when the measured run starts)."""

    #: This node's DHT id once started (None for designs without one: the tracker).
    node_id: bytes | None = None

    def prefill(self, contacts: list[tuple[bytes, tuple[str, int]]]) -> None:  # noqa: B027
        """Take ``(node id, address)`` pairs as routing-table contacts that have already
        proved their ids (``--warmup direct``); designs without a table ignore them."""

    def maintenance_bytes(self) -> int:
        """Maintenance bytes a remote node reported (inproc nodes: counted centrally)."""
        return 0

    def counters(self) -> dict[str, int]:
        """The node's own event counters (requests, timeouts, lookups by cause), for
        ``benchmarks/sim_scale.py --slices``; empty when the design keeps none."""
        return {}


class Impl(abc.ABC):
    """A design under test: shared infrastructure plus a node factory."""

    name: str = "?"

    async def setup(self, host: str) -> None:  # noqa: B027 - optional hook
        """Start shared infrastructure (bound on ``host``); default none."""

    def node_params(self) -> dict[str, Any]:
        """Plain-JSON parameters a node needs (sent to worker processes)."""
        return {}

    @abc.abstractmethod
    def new_node(self, idx: int, host: str, params: dict[str, Any]) -> ImplNode:
        """A fresh, not yet started node."""

    def node_id_for(self, params: dict[str, Any]) -> bytes | None:
        """The DHT id a node made with ``params`` will have, without making it (None
        when the design has no ids or draws them itself): what the sharded direct
        warm-up needs to know about the nodes of other ranks."""
        return None

    async def kill_infra(self) -> bool:
        """Crash the shared infrastructure; False when the design has none."""
        return False

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Stop shared infrastructure."""

    def infra_stats(self) -> dict[str, Any]:
        """Figures about the shared infrastructure for results.json."""
        return {}
