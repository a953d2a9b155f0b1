"""Designs under test behind one interface: kadshare, plain kademlia, a central tracker."""

from __future__ import annotations

from simulations.impls.base import Impl, ImplNode, provider_key_for

__all__ = ["Impl", "ImplNode", "provider_key_for", "make_impl", "node_class"]


def make_impl(name: str) -> Impl:
    """The Impl called ``name`` (kadshare, kademlia, tracker)."""
    if name == "kadshare":
        from simulations.impls.kadshare import KadshareImpl

        return KadshareImpl()
    if name == "kademlia":
        from simulations.impls.kademlia import KademliaImpl

        return KademliaImpl()
    if name == "tracker":
        from simulations.impls.tracker import TrackerImpl

        return TrackerImpl()
    raise ValueError(f"unknown impl {name!r}")


def node_class(name: str) -> type[ImplNode]:
    """The ImplNode class of ``name`` (used by worker processes)."""
    if name == "kadshare":
        from simulations.impls.kadshare import KadshareSimNode

        return KadshareSimNode
    if name == "kademlia":
        from simulations.impls.kademlia import KademliaSimNode

        return KademliaSimNode
    if name == "tracker":
        from simulations.impls.tracker import TrackerSimNode

        return TrackerSimNode
    raise ValueError(f"unknown impl {name!r}")
