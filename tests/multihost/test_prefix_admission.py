"""Per-prefix routing admission with real, distinct addresses (network namespaces).

On loopback every peer shares 127.0.0.0/8, so the cap is relaxed there; here six
"Sybil" peers sit in one /24 on one host and six honest peers in six other /24s on
other hosts. The observer's bucket must admit at most ``max_contacts_per_prefix`` of the
Sybils and every honest peer.
"""

from __future__ import annotations

import asyncio
import ipaddress

from dht.config import DhtConfig
from dht.node import DhtNode
from tests.multihost.netns import Host, Lab, enter_netns
from tests.security.nodethread import LoopThread

CONFIG = DhtConfig.for_tests()  # production cap: 2 per /24 per bucket, loopback exempt


class Site:
    """A lab host running DhtNodes on its own event loop, inside its namespace."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.lt = LoopThread(enter=lambda: enter_netns(host.netns))
        self.nodes: list[DhtNode] = []

    def start(self, addr: str, bootstrap: tuple[str, int] | None) -> DhtNode:
        async def go() -> DhtNode:
            node = DhtNode(config=CONFIG)
            await node.listen(port=0, interface=addr)
            if bootstrap:
                await node.bootstrap([bootstrap])
            return node

        node = self.lt.run(go(), timeout=60)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        async def stop() -> None:
            for node in self.nodes:
                node.stop()

        try:
            self.lt.run(stop(), timeout=20)
        finally:
            self.lt.close()


def _prefix(host: str) -> str:
    return str(ipaddress.ip_network(f"{host}/24", strict=False))


class TestPrefixAdmission:
    def test_one_subnet_gets_at_most_the_cap_in_a_bucket(self, lab: Lab) -> None:
        sites = [Site(h) for h in lab.hosts]
        try:
            observer = sites[0].start(lab.hosts[0].addr, None)
            seed = (lab.hosts[0].addr, observer.port)
            sybil_addrs = [f"10.213.9.{i}" for i in range(1, 7)]
            for cidr in sybil_addrs:
                lab.add_address(lab.hosts[1], f"{cidr}/16")
            honest_addrs = []
            for site in sites[2:]:
                extra = f"10.213.{30 + site.host.index}.1"
                lab.add_address(site.host, f"{extra}/16")
                honest_addrs += [site.host.addr, extra]
            for addr in sybil_addrs:
                sites[1].start(addr, seed)
            for site in sites[2:]:
                for addr in (site.host.addr, f"10.213.{30 + site.host.index}.1"):
                    site.start(addr, seed)

            async def table() -> list[str]:
                for _ in range(100):  # probes are answered within a second; bounded wait
                    hosts = [c.host for c in observer.contacts()]
                    sybils = [h for h in hosts if _prefix(h) == "10.213.9.0/24"]
                    if set(honest_addrs) <= set(hosts) and len(sybils) >= 2 \
                            and observer.protocol.router.rejected_by_prefix >= 4:
                        break
                    await asyncio.sleep(0.1)
                return [c.host for c in observer.contacts()]

            hosts = sites[0].lt.run(table(), timeout=30)
            sybils_in = [h for h in hosts if _prefix(h) == "10.213.9.0/24"]
            assert len(sybils_in) == CONFIG.max_contacts_per_prefix, hosts
            assert set(honest_addrs) <= set(hosts), hosts
            assert observer.protocol.router.rejected_by_prefix >= 4
        finally:
            for site in sites:
                site.close()
