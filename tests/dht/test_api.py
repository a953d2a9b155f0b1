"""The public API of docs/ARCHITECTURE.md: names, fields and config validation."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import dht
from dht import Contact, DhtConfig, DhtNode, ProviderRecord, SearchHit
from dht.config import PROTOCOL_VERSION
from dht.errors import DhtError, InvalidRecord, RecordTooLarge


class TestPublicApi:
    def test_all_is_complete_and_importable(self) -> None:
        for name in dht.__all__:
            assert hasattr(dht, name), name
        for name in ("DhtNode", "DhtConfig", "Identity", "ProviderRecord", "SearchHit",
                     "Contact"):
            assert name in dht.__all__

    def test_record_and_hit_fields(self) -> None:
        assert [f.name for f in dataclasses.fields(ProviderRecord)] == [
            "file_id", "node_id", "public_key", "grpc", "name", "size", "issued_at", "ttl",
            "signature", "partial",
        ]
        assert [f.name for f in dataclasses.fields(SearchHit)] == [
            "file_id", "name", "size", "providers",
        ]
        assert [f.name for f in dataclasses.fields(Contact)] == ["node_id", "host", "port"]
        assert isinstance(ProviderRecord.expires, property)

    def test_node_methods(self) -> None:
        for name in ("listen", "bootstrap", "announce", "find_providers", "search",
                     "withdraw", "leave"):
            assert inspect.iscoroutinefunction(getattr(DhtNode, name)), name
        for name in ("stop", "contacts", "stored_record_count", "announced_file_ids"):
            assert callable(getattr(DhtNode, name)) and not inspect.iscoroutinefunction(
                getattr(DhtNode, name)
            )

    def test_error_tree(self) -> None:
        for cls in (InvalidRecord, RecordTooLarge):
            assert issubclass(cls, DhtError)
        assert issubclass(InvalidRecord, ValueError)


class TestConfig:
    def test_defaults_validate_and_tests_profile_is_short(self) -> None:
        DhtConfig().validate()
        quick = DhtConfig.for_tests()
        assert quick.record_ttl == 30 and quick.republish_interval == 10.0
        assert "record_ttl=30" in repr(quick)

    def test_keyword_only_and_frozen(self) -> None:
        with pytest.raises(TypeError):
            DhtConfig(20)  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            DhtConfig().k = 3  # type: ignore[misc]

    @pytest.mark.parametrize("changes,field", [
        ({"k": 0}, "k"), ({"alpha": True}, "alpha"), ({"rpc_timeout_max": -1}, "rpc_timeout"),
        ({"record_ttl": 10, "republish_interval": 20.0}, "republish_interval"),
        ({"max_datagram": 100}, "max_datagram"), ({"max_record_ttl": 10}, "record_ttl"),
    ])
    def test_bad_values_name_the_field(self, changes: dict, field: str) -> None:
        with pytest.raises(ValueError, match=field):
            DhtConfig.for_tests(**changes)


class TestProtocolVersion:
    def test_another_k_needs_another_protocol_version(self) -> None:
        with pytest.raises(ValueError, match="protocol_version"):
            DhtConfig.for_tests(k=8)
        assert DhtConfig.for_tests(k=8, protocol_version=PROTOCOL_VERSION + 1).k == 8

    async def test_peers_of_different_versions_do_not_talk(self) -> None:
        """A network of another version stays apart: a current node's bootstrap finds nobody."""
        new = DhtNode(config=DhtConfig.for_tests(k=8, protocol_version=PROTOCOL_VERSION + 1,
                                                 lookup_timeout=2.0))
        old = DhtNode(config=DhtConfig.for_tests(lookup_timeout=2.0, rpc_timeout_max=0.5))
        await new.listen(port=0, interface="127.0.0.1")
        await old.listen(port=0, interface="127.0.0.1")
        try:
            assert await old.bootstrap([("127.0.0.1", new.port)]) == 0
            assert new.contacts() == [] and old.contacts() == []
            assert new.stats["malformed"] >= 1  # the old node's ping was dropped
        finally:
            old.stop()
            new.stop()


class TestSocket:
    async def test_udp_receive_buffer_is_enlarged(self) -> None:
        """The kernel default (208 KiB) dropped store bursts in 64-node runs."""
        node = DhtNode(config=DhtConfig.for_tests(socket_receive_buffer=512 * 1024))
        await node.listen(port=0, interface="127.0.0.1")
        try:
            assert node.receive_buffer >= 512 * 1024
        finally:
            node.stop()
