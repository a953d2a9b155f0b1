"""virtual: every node in this process on a virtual-time loop and an in-memory network.

The unmodified node code (kadshare's ``DhtNode``, ``kademlia.network.Server``, the
tracker baseline, which is plain UDP and so runs over the same network) runs on
``simulations.vloop.VirtualTimeLoop``; its datagrams go through
``simulations.vnet.VirtualNetwork`` (latency and loss of the NetModel, plus per-node
processing delay and uplink bandwidth). Readings then depend on the protocol and the
seed, not on how busy the machine is.

Everything random is seeded from ``--seed``: node identities (derived per node number,
so they do not depend on the order of joins), the ``dht`` package's RNG
(``dht.clock.set_rng``), and the global ``random`` module that the plain ``kademlia``
package draws refresh ids from (saved and restored around the run). The ``dht``
package reads time through ``dht.clock``, which follows the running loop; the plain
``kademlia`` package calls ``time.monotonic()``, so its two modules get a stand-in.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import ipaddress
import random
import time
from typing import Any

from simulations.impls import ImplNode
from simulations.runners.base import Runner, RunnerUnavailable
from simulations.vloop import VirtualTimeLoop
from simulations.vnet import VirtualNetwork

__all__ = ["VirtualRunner", "host_for"]

_FIRST_HOST = int(ipaddress.IPv4Address("127.0.1.0"))


def host_for(idx: int) -> str:
    """Node ``idx``'s own loopback address (127.0.0.1 is the tracker's)."""
    return str(ipaddress.IPv4Address(_FIRST_HOST + idx))


def _secret(seed: int, idx: int, what: str) -> bytes:
    return hashlib.sha256(f"kadshare-sim/virtual/{seed}/{what}/{idx}".encode()).digest()


class VirtualRunner(Runner):
    """Nodes are plain objects on the virtual loop; datagrams never touch the kernel."""

    name = "virtual"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.network: VirtualNetwork | None = None
        self._random_state: Any = None
        self._rng_token: Any = None
        self._shim: _TimeShim | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualTimeLoop):
            raise RunnerUnavailable(
                "the virtual runner needs the virtual-time loop "
                "(simulations.vloop.run_virtual); kadshare-sim sets it up")
        seed = self.cfg.seed
        self._random_state = random.getstate()
        random.seed(f"kadshare-sim/virtual-global/{seed}")
        self._rng_token = _seed_dht_rng(seed)
        self._shim = _TimeShim(loop)
        self._shim.install()
        # Taken after the RNG is set, so deliveries see the seeded RNG too.
        self.network = VirtualNetwork(loop, self.netmodel, proc_delay=self.cfg.proc_delay,
                                      uplink_bps=self.cfg.uplink)
        loop.set_network(self.network)
        await super().start()

    def params_for(self, idx: int) -> dict[str, Any]:
        """Node ``idx``'s parameters: its seeded identity depends on the seed and ``idx``
        only, so any process can tell any node's id (``node_id``)."""
        params = dict(self.impl.node_params())
        params["intervals"] = self.cfg.intervals
        if self.impl.name == "kadshare":
            params["secret"] = _secret(self.cfg.seed, idx, "ed25519").hex()
        elif self.impl.name == "kademlia":
            params["node_id"] = _secret(self.cfg.seed, idx, "kademlia")[:20].hex()
        return params

    def node_id(self, idx: int) -> bytes | None:
        """The DHT id node ``idx`` gets when spawned here, without spawning it."""
        return self.impl.node_id_for(self.params_for(idx))

    async def spawn(self, idx: int) -> ImplNode:
        return self.impl.new_node(idx, host_for(idx), self.params_for(idx))

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self._random_state is not None:
                random.setstate(self._random_state)
                self._random_state = None
            _reset_dht_rng(self._rng_token)
            self._rng_token = None
            if self._shim is not None:
                self._shim.uninstall()
                self._shim = None


def _seed_dht_rng(seed: int) -> Any:
    """Inject a seeded RNG into dht.clock (when the dht package has the seam)."""
    try:
        from dht import clock
    except ImportError:
        return None
    setter = getattr(clock, "set_rng", None)
    if setter is None:
        return None
    return setter(random.Random(f"kadshare-sim/dht/{seed}"))


def _reset_dht_rng(token: Any) -> None:
    if token is None:
        return
    try:
        from dht import clock
    except ImportError:
        return
    reset = getattr(clock, "reset_rng", None)
    if reset is not None:
        reset(token)


# Modules whose ``time`` global the shim replaces: the plain kademlia package stamps
# buckets and stored values with time.monotonic(). (dht reads dht.clock, which follows
# the running loop by itself.)
_KADEMLIA_MODULES = ("kademlia.routing", "kademlia.storage")


class _TimeShim:
    """Stands in for the ``time`` module inside the node code's modules during a
    virtual run: ``monotonic()`` is the loop's clock, ``time()`` its wall_time()."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._saved: list[tuple[Any, Any]] = []

    def monotonic(self) -> float:
        return self._loop.time()

    def time(self) -> float:
        return self._loop.wall_time()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def install(self) -> None:
        for name in _KADEMLIA_MODULES:
            mod = importlib.import_module(name)
            if getattr(mod, "time", None) is time:
                self._saved.append((mod, mod.time))
                mod.time = self  # type: ignore[attr-defined]  # modules' `time` name points at the virtual clock

    def uninstall(self) -> None:
        for mod, orig in self._saved:
            mod.time = orig
        self._saved.clear()
