"""kadshare's DHT (the ``dht`` package) driven through its public API only."""

from __future__ import annotations

from typing import Any

from simulations.impls.base import Impl, ImplNode
from simulations.scenarios import FileSpec

__all__ = ["KadshareImpl", "KadshareSimNode"]


def _identity(params: dict[str, Any]) -> Any:
    """The Ed25519 identity ``params["secret"]`` seeds (None: the node draws one)."""
    from dht.identity import Identity

    secret = params.get("secret")
    return Identity.from_private_bytes(bytes.fromhex(secret)) if secret else None


class KadshareSimNode(ImplNode):
    """One ``dht.DhtNode`` with ``DhtConfig.for_tests()`` (short TTL and republish), or
    the production intervals when ``params["intervals"] == "production"``.

    ``params["secret"]`` (64 hex digits, given by the virtual runner) seeds the Ed25519
    identity so that node ids, and with them every routing decision, repeat run to run.
    """

    def __init__(self, idx: int, host: str, params: dict[str, Any]) -> None:
        super().__init__(idx, host, params)
        from dht import DhtConfig, DhtNode

        identity = _identity(params)
        config = (DhtConfig() if params.get("intervals") == "production"
                  else DhtConfig.for_tests())
        self.node = DhtNode(identity=identity, config=config)
        self.node_id = self.node.identity.node_id

    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        await self.node.listen(port=0, interface=self.host)
        self.addr = (self.host, int(self.node.port))
        if bootstrap:
            await self.node.bootstrap(bootstrap)

    def prefill(self, contacts: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.node.prefill(contacts)

    async def announce(self, f: FileSpec) -> None:
        await self.node.announce(f.file_id, f.name, f.size, grpc=self.provider_key)

    async def lookup(self, f: FileSpec) -> list[str]:
        return [r.grpc for r in await self.node.find_providers(f.file_id)]

    async def leave(self) -> None:
        await self.node.leave()

    def crash(self) -> None:
        self.node.stop()

    def records(self) -> int:
        return int(self.node.stored_record_count())

    def counters(self) -> dict[str, int]:
        return dict(self.node.stats)


class KadshareImpl(Impl):
    """kadshare: no shared infrastructure."""

    name = "kadshare"

    def new_node(self, idx: int, host: str, params: dict[str, Any]) -> ImplNode:
        return KadshareSimNode(idx, host, params)

    def node_id_for(self, params: dict[str, Any]) -> bytes | None:
        identity = _identity(params)
        return None if identity is None else bytes(identity.node_id)
