"""Prometheus metrics of one peer, in its own registry (tests run several peers per process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["PeerMetrics"]


class PeerMetrics:
    """Counters the servicer and REST app update, plus gauges read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.lookups = Counter(
            "kadshare_lookups", "DHT lookups made for REST calls", ["kind", "outcome"], registry=r
        )
        self.lookup_seconds = Histogram(
            "kadshare_lookup_seconds", "Latency of DHT lookups", ["kind"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.bytes_served = Counter(
            "kadshare_bytes_served", "File bytes sent by Download", registry=r
        )
        self.bytes_received = Counter(
            "kadshare_bytes_received", "File bytes received by Upload", registry=r
        )
        self.transfers = Counter(
            "kadshare_transfers", "Finished transfers", ["direction", "outcome"], registry=r
        )
        self.active_transfers = Gauge(
            "kadshare_active_transfers", "Transfers in progress", ["direction"], registry=r
        )
        self.active_transfers.labels("download")
        self.active_transfers.labels("upload")
        self.shared_files = Gauge("kadshare_shared_files", "Files shared by this peer", registry=r)
        self.records_stored = Gauge(
            "kadshare_records_stored", "DHT records held by this node", registry=r
        )
        self.routing_table_size = Gauge(
            "kadshare_routing_table_size", "Contacts in the routing table", registry=r
        )
        self.hash_calls = Gauge(
            "kadshare_files_hashed", "Files hashed since start (cache misses)", registry=r
        )
        self._refreshers: list[Callable[[], None]] = []

    def add_dht_stats(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Expose the DHT's own counters (timeouts, refused records, ...) at each scrape."""
        self.registry.register(_DhtStats(source))

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Run ``refresh`` before each exposition to update the gauges read from state."""
        self._refreshers.append(refresh)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        for refresh in self._refreshers:
            refresh()
        return generate_latest(self.registry)


class _DhtStats(Collector):
    """``kadshare_dht_events_total{event=...}`` read from ``DhtNode.stats()``."""

    def __init__(self, source: Callable[[], Mapping[str, int]]) -> None:
        self.source = source

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily("kadshare_dht_events", "DHT protocol events", labels=["event"])]

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "kadshare_dht_events", "DHT protocol events by kind", labels=["event"]
        )
        for event, value in sorted(self.source().items()):
            family.add_metric([str(event)], float(value))
        yield family
