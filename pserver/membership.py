"""How a peer stays in the network: joining, rejoining after an outage, the saved
contacts of the last run (``contacts.msgpack``) and liveness sweeps.

Kept apart from ``pserver.node`` (the wiring) because it is the one part of a peer that
reasons about the routing table over time; ``Node`` only starts and stops its loops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from pathlib import Path
from typing import Any

from dht import DhtNode
from pserver.config import NodeConfig
from pserver.datadir import load_msgpack, save_msgpack

log = logging.getLogger(__name__)

CONTACTS_FILE = "contacts.msgpack"

Address = tuple[str, int]


def advertised_host(host: str, bootstrap: tuple[Address, ...]) -> str:
    """The address other peers should dial for our gRPC port.

    A wildcard bind (``0.0.0.0`` / ``::``) cannot be dialled; use the local address the
    kernel would pick to reach the first bootstrap node (a UDP ``connect`` sends nothing),
    else the loopback address.
    """
    if host not in ("0.0.0.0", "::", ""):
        return host
    family = socket.AF_INET6 if host == "::" else socket.AF_INET
    for target_host, target_port in bootstrap:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target_host, target_port))
                return str(probe.getsockname()[0])
        except OSError:
            continue
    log.warning("listening on %s without a bootstrap: advertising loopback for gRPC", host)
    return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def _saved_addresses(data_dir: Path) -> list[Address]:
    """The contacts of the last run; a damaged file gives none (never an error)."""
    saved = load_msgpack(data_dir / CONTACTS_FILE, [])
    if not isinstance(saved, list):
        return []
    return [
        (str(c[0]), int(c[1]))
        for c in saved
        if isinstance(c, list | tuple) and len(c) == 2 and isinstance(c[1], int)
    ]


class Membership:
    """Join, stay joined and remember whom we knew, for one ``DhtNode``."""

    def __init__(self, dht: DhtNode, config: NodeConfig) -> None:
        self.dht = dht
        self.config = config
        self.data_dir = config.data_dir
        self._saved: list[list[Any]] = []

    async def join(self) -> tuple[Address, ...]:
        """Bootstrap from the given addresses, else from the contacts of the last run;
        returns the addresses tried."""
        targets = list(self.config.bootstrap)
        if not targets:
            targets = _saved_addresses(self.data_dir)
            if targets:
                log.info("rejoining through %d saved contacts", len(targets))
        if not targets:
            log.info("no bootstrap: first node of a new network")
            return ()
        try:
            await asyncio.wait_for(self.dht.bootstrap(targets), self.config.bootstrap_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer keeps running and can be reached later
            log.warning("bootstrap failed (%s); continuing alone", exc or type(exc).__name__)
        return tuple(targets)

    async def rejoin_if_alone(self) -> bool:
        """A table emptied by a cut never refills by itself (nobody left to ask)."""
        if self.dht.contacts():
            return True
        targets = list(self.config.bootstrap) + _saved_addresses(self.data_dir)
        if not targets:
            return False
        try:
            found = await asyncio.wait_for(self.dht.bootstrap(targets),
                                           self.config.bootstrap_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("rejoin failed: %s", exc or type(exc).__name__)
            return False
        if found:
            log.info("routing table was empty; rejoined with %d contacts", found)
        return bool(found)

    def save_contacts(self) -> None:
        """Write the routing contacts for the next start; never raises (it runs at stop)."""
        try:
            contacts = [[c.host, c.port] for c in self.dht.contacts()]
            contacts = contacts[:self.config.saved_contacts_max]
            if contacts and contacts != self._saved:
                save_msgpack(self.data_dir / CONTACTS_FILE, contacts)
                self._saved = contacts
        except Exception as exc:  # never let bookkeeping stop a shutdown
            log.warning("saving contacts failed: %s", exc)

    async def contacts_loop(self) -> None:
        """Save contacts now and then; rejoin when an outage or partition emptied the table."""
        cfg = self.config
        waited = 0.0
        step = min(cfg.contacts_interval, cfg.rejoin_check_interval)
        backoff = next_try = 0.0
        while True:
            await asyncio.sleep(step)
            waited += step
            next_try -= step
            if next_try <= 0 and not self.dht.contacts():
                joined = await self.rejoin_if_alone()
                backoff = 0.0 if joined else min(max(backoff * 2, step), cfg.rejoin_max_backoff)
                next_try = backoff
            if waited >= cfg.contacts_interval:
                waited = 0.0
                self.save_contacts()

    async def liveness_loop(self) -> None:
        """Ping contacts that have been silent, so ``/peers`` shows who is there now.

        Sweeps are jittered (0.75-1.25 x the interval) so peers started together do not
        ping in waves; each pings at most ``liveness_pings_per_sweep`` contacts.
        """
        every = self.config.liveness_interval
        while True:
            await asyncio.sleep(every * random.uniform(0.75, 1.25))
            try:
                await self.dht.check_contacts(2 * every, self.config.liveness_pings_per_sweep)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("liveness sweep failed; retrying")
