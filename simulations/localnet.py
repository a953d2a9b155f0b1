"""A small network of real ``kadshare-node`` processes on 127.0.0.1.

Used by ``make demo`` and the end-to-end tests: each peer is launched by
``pserver.launch`` in its own process, with its own share and data folders under one
root, all ports chosen by the OS (port 0). Everything here is bounded in time.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pserver.launch import START_TIMEOUT, NodeProcess, NodeSpec

log = logging.getLogger(__name__)

class Peer(NodeProcess):
    """One running ``kadshare-node`` process of a :class:`LocalNetwork`, by index."""

    index: int = 0


class LocalNetwork:
    """Start, track and stop ``kadshare-node`` processes under one root folder."""

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.host = host
        self.extra_args = extra_args
        self.env = {**os.environ, **(env or {})}
        self.peers: list[Peer] = []

    def start_peer(
        self,
        files: dict[str, bytes] | None = None,
        *,
        bootstrap: list[Peer] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> Peer:
        """Start one peer sharing ``files`` (name -> content) and wait for its JSON line."""
        index = len(self.peers)
        base = self.root / f"peer{index}"
        share, data = base / "share", base / "data"
        share.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            (share / name).write_bytes(content)
        spec = NodeSpec(
            data=data, share=share, host=self.host,
            rest_host=self.host,  # the harness reaches REST where it put the node
            bootstrap=[other.bootstrap_address for other in bootstrap or []],
            extra=self.extra_args, env=self.env, name=f"peer {index}",
        )
        peer = Peer.launch(spec, stdout=base / "stdout.log", stderr=base / "stderr.log",
                           timeout=timeout)
        peer.index = index
        self.peers.append(peer)
        log.info("peer %d up: %s", index, peer.info)
        return peer

    def start(self, shares: list[dict[str, bytes]]) -> list[Peer]:
        """Start one peer per entry of ``shares``; the first is the bootstrap of the rest."""
        first = self.start_peer(shares[0])
        for files in shares[1:]:
            self.start_peer(files, bootstrap=[first])
        return self.peers

    def stop(self) -> dict[int, int]:
        """Stop every peer (SIGTERM, SIGKILL after a grace); exit codes by peer index."""
        return {peer.index: peer.stop() for peer in self.peers}

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


__all__ = ["LocalNetwork", "Peer"]
