"""Swarming of one download: lend the part file to the local node while it downloads
(so other downloaders can fetch the chunks already verified here), and add new sources
(partial providers) as they appear.

``download_file`` drives a :class:`Swarm` (the protocol); :class:`NodeSwarm` is the
one that talks to a kadshare node over its REST API (``/partials``, ``/providers``;
docs/PROTOCOL.md, "Swarming"). Lending is best effort: a node that refuses or does not
answer costs this download nothing but the swarm's help.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

from protos import kadshare_pb2

log = logging.getLogger(__name__)

#: Seconds between reports of the chunks written (the node's lease is 30 s).
REPORT_INTERVAL = 0.25
#: Seconds between provider lookups for new sources.
SOURCES_INTERVAL = 1.0
#: Chunks per ``Download`` call in a swarm: short runs keep the rarest-first choice
#: fresh (a long run from a capped seeder would fetch chunks a peer gets meanwhile).
RUN_CHUNKS = 2
HTTP_TIMEOUT = 10.0


class Swarm(Protocol):
    """What a download asks of its swarm."""

    #: This downloader's node id (shares out the seeds' chunks; see availability.py).
    me: str

    async def lend(self, part: Path, leaves: Path, info: kadshare_pb2.FileInfo) -> None:
        """Start serving the verified chunks of ``part`` (``leaves``: raw leaf hashes)."""

    async def report(self, have: bytes) -> None:
        """The chunks written so far (packed bitfield)."""

    async def end(self) -> None:
        """The download is over (done or not): stop serving it as a partial file."""

    async def sources(self) -> dict[str, str]:
        """Providers now known, full or partial: gRPC address -> node id ('' unknown)."""


class NodeSwarm:
    """A :class:`Swarm` through the local kadshare node at ``node_url`` (its ``token``
    authorises the writes; ``own_node_id`` is left out of the sources)."""

    def __init__(self, node_url: str, token: str, file_id: str, own_node_id: str = "",
                 timeout: float = HTTP_TIMEOUT) -> None:
        self.file_id = file_id
        self.me = own_node_id
        import httpx  # here, not at the top: `kadshare get --from` never swarms (~20 ms)

        self._http = httpx.AsyncClient(
            base_url=node_url.rstrip("/"), timeout=timeout, trust_env=False,
            headers={"Authorization": f"Bearer {token}"})
        self._lent = False
        self._warned = False

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
                    quiet: bool = False) -> dict[str, Any] | None:
        """One REST call; None (logged once unless ``quiet``) if the node refused or did
        not answer."""
        import httpx  # (loaded by __init__ already)

        try:
            resp = await self._http.request(method, path, json=body)
            doc = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            why = f"{type(exc).__name__}"
        else:
            if resp.status_code < 300 and isinstance(doc, dict):
                return doc
            why = str(doc.get("error") if isinstance(doc, dict) else resp.status_code)
        if quiet:
            log.debug("swarm: %s %s: %s", method, path, why)
        elif not self._warned:
            self._warned = True
            log.info("swarm: %s %s failed (%s); downloading without it", method, path, why)
        return None

    async def lend(self, part: Path, leaves: Path, info: kadshare_pb2.FileInfo) -> None:
        paths = await asyncio.to_thread(lambda: (str(part.resolve()), str(leaves.resolve())))
        body = {"file_id": self.file_id, "path": paths[0], "leaves": paths[1],
                "name": info.name or self.file_id[:16], "size": info.size}
        self._lent = await self._call("POST", "/partials", body) is not None

    async def report(self, have: bytes) -> None:
        if self._lent:
            await self._call("PUT", f"/partials/{self.file_id}", {"have": have.hex()})

    async def end(self) -> None:
        if self._lent:
            self._lent = False
            await self._call("DELETE", f"/partials/{self.file_id}")

    async def close(self) -> None:
        """Close the HTTP client (after ``end``; the caller that made this swarm)."""
        await self._http.aclose()

    async def sources(self) -> dict[str, str]:
        doc = await self._call("GET", f"/providers/{self.file_id}", quiet=True)
        found = doc.get("providers", []) if doc else []
        return {str(p["grpc"]): str(p.get("node_id") or "") for p in found
                if isinstance(p, dict) and p.get("grpc") and p.get("node_id") != self.me}
