"""Routing-table admission rules that need several addresses (127.0.0.0/8 aliases)."""

from __future__ import annotations

from dht import DhtConfig, DhtNode


class TestPrefixCap:
    async def test_a_bucket_takes_at_most_n_contacts_per_24(self) -> None:
        cfg = DhtConfig.for_tests(prefix_cap_on_loopback=True, max_contacts_per_prefix=2)
        hub = DhtNode(config=cfg)
        await hub.listen(0, "127.0.2.1")
        crowd = [DhtNode(config=cfg) for _ in range(4)]
        other = DhtNode(config=cfg)
        try:
            for i, node in enumerate(crowd):
                await node.listen(0, f"127.0.0.{i + 2}")
            await other.listen(0, "127.0.1.2")
            for node in [*crowd, other]:
                await node.bootstrap([("127.0.2.1", hub.port)])
            hosts = [c.host for c in hub.contacts()]
            assert sum(h.startswith("127.0.0.") for h in hosts) == 2
            assert "127.0.1.2" in hosts
            assert hub.protocol.router.rejected_by_prefix >= 2
        finally:
            for node in [hub, *crowd, other]:
                node.stop()

    async def test_loopback_is_exempt_by_default(self) -> None:
        cfg = DhtConfig.for_tests(max_contacts_per_prefix=1)
        nodes = [DhtNode(config=cfg) for _ in range(4)]
        try:
            for node in nodes:
                await node.listen(0, "127.0.0.1")
            for node in nodes[1:]:
                await node.bootstrap([("127.0.0.1", nodes[0].port)])
            assert len(nodes[0].contacts()) == 3
        finally:
            for node in nodes:
                node.stop()
