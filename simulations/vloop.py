"""A virtual-time asyncio event loop: the clock jumps to the next timer when idle.

Why our own loop and not a package: ``looptime`` (the maintained candidate) is a pytest
plugin that patches a running loop's clock for tests; it has no datagram network, no
wall-clock epoch for record expiry and no guard against threads, all of which this
harness needs, and subclassing asyncio's selector loop for them takes ~100 lines. The
one asyncio internal relied on is ``BaseEventLoop._run_once`` asking its selector to
wait ``timeout`` seconds for the next timer; the selector here waits zero seconds of
real time and moves the virtual clock forward by ``timeout`` instead.

Rules under virtual time:

* ``time()`` is virtual monotonic seconds (starting at ``START``); ``wall_time()`` is
  a fixed virtual epoch plus the same elapsed time, so record ``issued_at``/expiry
  follow the simulation (``dht.clock.wall`` reads it).
* Threads are errors: ``run_in_executor`` (and so ``asyncio.to_thread``) raises
  ``VirtualTimeError`` instead of letting real time pass unseen.
* ``getaddrinfo`` answers IP literals inline and refuses names (there is no DNS).
* ``create_datagram_endpoint`` needs a network installed with ``set_network`` (see
  ``simulations.vnet``); real sockets would bypass the virtual clock.

Real file descriptors (the self-pipe for signals, stdin) are still polled, without
blocking, on every turn, so Ctrl-C and SIGTERM work.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
from typing import Any, Protocol

__all__ = ["VirtualTimeLoop", "VirtualTimeError", "START", "EPOCH", "run_virtual"]

START = 100_000.0              # virtual monotonic time at loop creation
EPOCH = 1_767_225_600.0        # 2026-01-01T00:00:00Z: wall_time() at START


class VirtualTimeError(RuntimeError):
    """Something tried to leave virtual time (a thread, a DNS name, a real socket)."""


class DatagramNetwork(Protocol):
    """What the loop needs from an in-memory network (simulations.vnet.VirtualNetwork)."""

    def create_endpoint(self, protocol_factory: Any, local_addr: Any,
                        remote_addr: Any) -> tuple[Any, Any]: ...


class _JumpSelector(selectors.BaseSelector):
    """Polls the real selector without blocking; when nothing is ready, advances the
    loop's virtual clock by the time asyncio would have slept."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            # No timer and nothing ready: only a real event (a signal) can wake us.
            return self._real.select(None)
        assert self.loop is not None
        self.loop._advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock is virtual (see the module docstring)."""

    def __init__(self) -> None:
        selector = _JumpSelector()
        super().__init__(selector)
        selector.loop = self
        self._vtime = START
        self._network: DatagramNetwork | None = None

    # -- the clock -------------------------------------------------------------------
    def time(self) -> float:
        return self._vtime

    def wall_time(self) -> float:
        """Virtual epoch seconds, for record timestamps (dht.clock.wall)."""
        return EPOCH + (self._vtime - START)

    def _advance(self, seconds: float) -> None:
        if seconds <= 0:
            return
        target = self._vtime + seconds
        # Land exactly on the next timer's time, not on now + (when - now), which can
        # round differently: event times then do not depend on which other timers the
        # clock stopped at before (simulations.mpi shards must agree bit for bit).
        scheduled = self._scheduled  # type: ignore[attr-defined]  # asyncio's timer heap
        if scheduled and scheduled[0].when() <= target + 1e-6:
            target = max(self._vtime, scheduled[0].when())
        self._vtime = target

    def advance_to(self, when: float) -> None:
        """Move the clock forward to ``when`` exactly (a window boundary of a shard)."""
        self._vtime = max(self._vtime, when)

    # -- no threads, no DNS, no real sockets ------------------------------------------
    def run_in_executor(  # type: ignore[override]  # it only raises: no Future to type
        self, executor: Any, func: Any, *args: Any
    ) -> Any:
        raise VirtualTimeError(
            f"thread use under virtual time ({getattr(func, '__qualname__', func)!r}): "
            "a thread would let real time pass unseen; make the call non-blocking")

    def set_default_executor(self, executor: Any) -> None:
        raise VirtualTimeError("no executor under virtual time")

    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[Any]:
        try:
            return socket.getaddrinfo(host, port, family, type, proto,
                                      flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
        except socket.gaierror as exc:
            raise VirtualTimeError(
                f"cannot resolve {host!r} under virtual time: only IP literals") from exc

    def set_network(self, network: DatagramNetwork | None) -> None:
        """Install the in-memory network that serves create_datagram_endpoint."""
        self._network = network

    async def create_datagram_endpoint(self, protocol_factory: Any,
                                       local_addr: Any = None, remote_addr: Any = None,
                                       **kwargs: Any) -> tuple[Any, Any]:
        if self._network is None:
            raise VirtualTimeError("no in-memory network installed on the virtual loop")
        return self._network.create_endpoint(protocol_factory, local_addr, remote_addr)

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise VirtualTimeError("TCP is not simulated under virtual time")

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        raise VirtualTimeError("TCP is not simulated under virtual time")


def run_virtual(main: Any) -> Any:
    """Run coroutine ``main`` to completion on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop()  # asyncio.Runner(loop_factory=...) needs Python 3.11
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            leftover = asyncio.all_tasks(loop)  # as asyncio.run does: cancel what is left
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
