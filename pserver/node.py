"""``Node``: one peer = a ``dht.DhtNode`` (UDP) + the gRPC ``TransferService`` + the Sanic
REST app, all in the caller's asyncio loop, plus the share folder and the data folder.

The data folder keeps everything a restart needs: ``identity.key`` (same node id),
``contacts.msgpack`` (rejoin without ``--bootstrap``), ``hashcache.msgpack`` (no
rehash), ``shares.msgpack`` (files shared or unshared over REST), ``token`` (REST
writes) and ``node.json`` (the JSON line). Every file is written atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1._async import HealthServicer

from dht import DhtConfig, DhtNode, Identity, LookupStats
from kadcommon.addr import format_hostport
from kadcommon.atomic import write_atomic
from kadcommon.netkey import NetworkKey
from pserver.announcer import Announcer
from pserver.catalog import Catalog, SharedFile
from pserver.config import NodeConfig
from pserver.datadir import DataDirLock, load_or_create_token, remove_stale_temps
from pserver.errors import ConfigError, LookupTimedOut, LookupUnavailable
from pserver.folders import FolderSharer
from pserver.grpcsec import ServerSecurity
from pserver.membership import Membership, advertised_host
from pserver.metrics import PeerMetrics
from pserver.partials import PartialFile, PartialFiles
from pserver.ports import check_listen_addresses
from pserver.restserver import RestServer
from pserver.transfer import TransferServicer, UploadReceiver, start_grpc_server

log = logging.getLogger(__name__)

def _log_late_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("sharing by path failed: %s", task.exception())


class Node:
    """A running peer. Use :meth:`start`; ``info`` is the JSON line; :meth:`stop` ends it."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = PeerMetrics()
        self.catalog = Catalog(
            config.share_dir, config.data_dir, config.chunk_size, config.settle_seconds,
            publish_every=config.publish_every,
        )
        self.token = ""
        self.info: dict[str, Any] = {}
        self.dht: DhtNode | None = None
        self.announcer: Announcer | None = None
        self.folders: FolderSharer | None = None
        self.partials = PartialFiles(announce=self._announce_partial,
                                     withdraw=self._withdraw_partial,
                                     is_private=self.catalog.is_private)
        self._lock = DataDirLock(config.data_dir)
        self._grpc: grpc.aio.Server | None = None
        self._health: HealthServicer | None = None
        self.membership: Membership | None = None
        self._rest: RestServer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()
        self._stopping = False

    # ---- lifecycle ---------------------------------------------------------------

    @classmethod
    async def start(cls, config: NodeConfig) -> Node:
        """Start every part; on any failure undo what was started and raise."""
        try:
            config.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        check_listen_addresses(config)  # before any state is touched or logged
        node = cls(config)
        try:
            await node._start()
        except BaseException:
            await node._close(graceful=False)
            raise
        return node

    async def _start(self) -> None:
        cfg = self.config
        self._prepare_folders()
        self._lock.acquire()
        remove_stale_temps(cfg.data_dir)
        identity = Identity.load_or_create(cfg.data_dir / "identity.key")
        self.token = load_or_create_token(cfg.data_dir / "token")
        self.catalog.load()
        self.folders = FolderSharer(self.catalog, identity.public_key, identity.sign)
        self.catalog.remove_stale_uploads()
        netkey = NetworkKey(cfg.network_key) if cfg.network_key else None
        dht_config = cfg.dht_config or DhtConfig()
        if netkey is not None:
            dht_config = replace(dht_config, network_key=cfg.network_key)
        self.dht = DhtNode(identity=identity, config=dht_config)
        await self.dht.listen(port=cfg.dht_port, interface=cfg.host)
        uploads = UploadReceiver(
            self.catalog, cfg, self.metrics, self._after_upload, token=self.token
        )
        servicer = TransferServicer(self.catalog, cfg, self.metrics, uploads, self.partials)
        security = ServerSecurity.create(
            identity.public_key, identity.sign, identity.node_id_hex,
            tls=not cfg.insecure_transfers, netkey=netkey,
        )
        self._grpc, grpc_port, self._health = await start_grpc_server(
            servicer, cfg.host, cfg.grpc_port, security,
        )
        self._rest = await RestServer.start(self, cfg, name_hint=self.dht.node_id[:8])
        rest_port = self._rest.port
        self.metrics.on_scrape(self._refresh_gauges)
        dht = self.dht
        self.metrics.add_dht_stats(lambda: dht.stats)  # read at each scrape
        self.membership = Membership(self.dht, cfg)
        joined_through = await self.membership.join()
        advertised = advertised_host(cfg.host, joined_through)
        self.announcer = Announcer(
            self.dht, self.catalog, format_hostport(advertised, grpc_port),
            timeout=cfg.announce_timeout, parallel=cfg.announce_parallel,
        )
        self.catalog.on_progress = self.announcer.sync
        self.membership.save_contacts()  # so a crash right after joining can still rejoin
        first = asyncio.create_task(self._first_index(), name="first-scan")
        self._tasks.append(first)  # cancelled by stop() even if the start is interrupted
        try:
            await asyncio.wait_for(asyncio.shield(first), cfg.startup_index_timeout)
        except asyncio.TimeoutError:
            log.info("share folder still being hashed; continuing in the background")
        self.info = {
            "node_id": self.dht.node_id,
            "host": cfg.host,
            "dht_port": self.dht.port,
            "grpc_port": grpc_port,
            "rest_port": rest_port,
            "transfers": security.mode,  # tls | plaintext (--insecure-transfers)
            "network": netkey.fingerprint if netkey else "public",
        }
        write_atomic(cfg.data_dir / "node.json", (json.dumps(self.info) + "\n").encode())
        self._tasks.append(asyncio.create_task(self._scan_loop(first), name="scan"))
        self._tasks.append(asyncio.create_task(self.partials.expire_loop(), name="partials"))
        self._tasks.append(
            asyncio.create_task(self.membership.contacts_loop(), name="contacts")
        )
        if cfg.liveness_interval > 0:
            self._tasks.append(
                asyncio.create_task(self.membership.liveness_loop(), name="liveness")
            )
        log.info(
            "node %s up: dht %d, grpc %d, rest %d, %d files",
            self.dht.node_id[:8], self.dht.port, grpc_port, rest_port, len(self.catalog),
        )

    def _prepare_folders(self) -> None:
        cfg = self.config
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            probe = cfg.data_dir / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"data folder {cfg.data_dir} is not writable: {exc.strerror}"
            ) from exc
        if cfg.share_dir is not None:
            if not cfg.share_dir.is_dir():
                raise ConfigError(f"share folder {cfg.share_dir} is not a directory")
            try:
                os.listdir(cfg.share_dir)
            except OSError as exc:
                raise ConfigError(
                    f"share folder {cfg.share_dir} is not readable: {exc.strerror}"
                ) from exc
            if cfg.accept_uploads and not os.access(cfg.share_dir, os.W_OK | os.X_OK):
                raise ConfigError(f"--accept-uploads needs a writable share folder {cfg.share_dir}")

    async def stop(self, graceful: bool = True) -> None:
        """Withdraw records (when ``graceful``), close every listener, save state."""
        await self._close(graceful)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _close(self, graceful: bool) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.partials.close()
            if self.membership is not None:
                self.membership.save_contacts()
            if self._health is not None:
                with contextlib.suppress(Exception):
                    await self._health.enter_graceful_shutdown()
            if self.dht is not None:
                await self._stop_dht(graceful)
            if self._grpc is not None:
                await self._grpc.stop(grace=1.0 if graceful else None)
            if self._rest is not None:
                await self._rest.stop()
            with contextlib.suppress(OSError):
                self.catalog.save()
            if self.info:  # its ports are closed now: a stale node.json would mislead
                with contextlib.suppress(OSError):
                    (self.config.data_dir / "node.json").unlink()
        finally:
            self._lock.release()
            self._stopped.set()
            if self.info:  # a start that failed never announced "up"
                log.info("node stopped")

    async def _stop_dht(self, graceful: bool) -> None:
        assert self.dht is not None
        if graceful:
            try:
                await asyncio.wait_for(self.dht.leave(), self.config.leave_timeout)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("graceful leave failed (%s); stopping", exc or type(exc).__name__)
        with contextlib.suppress(Exception):
            self.dht.stop()

    # ---- background work ---------------------------------------------------------

    async def _index_once(self) -> None:
        try:
            await self.catalog.scan()
        except OSError as exc:
            log.warning("scanning the share folder failed: %s", exc)
        if self.folders is not None:
            try:
                await self.folders.sync()
            except Exception:  # a folder must never stop the files from being shared
                log.exception("sharing folders failed; retried at the next scan")
        if self.announcer is not None:  # None while still joining: the first scan syncs
            await self.announcer.sync()

    async def _first_index(self) -> None:
        """The start's scan: files still settling (just copied in) are waited for, a
        bounded number of times, so the JSON line means "what was there is shared"."""
        await self._index_once()
        step = max(0.1, min(0.5, self.config.settle_seconds / 2))
        for _ in range(int(2 * self.config.settle_seconds / step) + 2):
            if not self.catalog.settling:
                return
            await asyncio.sleep(step)
            await self._index_once()

    async def _scan_loop(self, first: asyncio.Task[None]) -> None:
        """Rescan forever; a folder that takes long to walk is walked less often (at most
        ~10% of the time goes to listing it)."""
        await first
        pause = self.config.scan_interval
        while True:
            await asyncio.sleep(pause)
            try:
                await self._index_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("share folder scan failed; retrying")
            pause = max(self.config.scan_interval, 10 * self.catalog.last_walk_seconds)

    async def _after_upload(self, entry: SharedFile) -> None:
        if self.announcer is not None:
            await self.announcer.sync()

    def _refresh_gauges(self) -> None:
        self.metrics.shared_files.set(len(self.catalog))
        self.metrics.hash_calls.set(self.catalog.hash_calls)
        if self.dht is not None:
            with contextlib.suppress(Exception):
                self.metrics.records_stored.set(self.dht.stored_record_count())
                self.metrics.routing_table_size.set(len(self.dht.contacts()))

    # ---- what the REST app calls (pserver.rest.PeerApi) --------------------------

    def status(self) -> dict[str, Any]:
        assert self.dht is not None
        return {
            **self.info,
            "peers": len(self.dht.contacts(live_only=True)),
            "files": len(self.catalog),
            "records": self.dht.stored_record_count(),
        }

    def peers(self) -> list[dict[str, Any]]:
        assert self.dht is not None
        return [
            {"node_id": c.node_id, "host": c.host, "dht_port": c.port}
            for c in self.dht.contacts(live_only=True)
        ]

    async def search(self, query: str) -> list[dict[str, Any]]:
        assert self.dht is not None
        stats = LookupStats()
        hits = await self._lookup(self.dht.search(query, stats=stats))
        if not hits:
            self._check_answered(stats, "search")
        return [
            {"file_id": h.file_id, "name": h.name, "size": h.size, "providers": h.providers}
            for h in hits
        ]

    async def providers(self, file_id: str) -> list[dict[str, Any]]:
        assert self.dht is not None
        stats = LookupStats()
        records = await self._lookup(self.dht.find_providers(file_id, stats=stats))
        if not records:
            self._check_answered(stats, "provider lookup")
        return [
            {
                "node_id": r.node_id, "grpc": r.grpc, "name": r.name, "size": r.size,
                "expires": int(r.expires), "partial": r.partial,
            }
            for r in records
        ]

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> int:
        """Join (more of) the network through ``addrs`` (a share link's hints); returns the
        live contacts afterwards. Failure to reach them is not an error: the count says it."""
        assert self.dht is not None
        try:
            await asyncio.wait_for(self.dht.bootstrap(addrs), self.config.bootstrap_timeout)
        except asyncio.TimeoutError:
            log.info("bootstrap through %d address(es) timed out", len(addrs))
        if self.membership is not None:
            self.membership.save_contacts()
        return len(self.dht.contacts(live_only=True))

    def _check_answered(self, stats: LookupStats, what: str) -> None:
        """An empty answer is "no match" only if some peer answered: else say so (503)."""
        assert self.dht is not None
        contacts = self.dht.contacts()
        if stats.answered or (contacts and not stats.asked):  # e.g. no searchable word
            return
        if not contacts:
            raise LookupUnavailable(
                f"this node knows no other peer, so the {what} reached nobody "
                "(start it with --bootstrap HOST:DHT_PORT of a running peer)")
        raise LookupUnavailable(
            f"none of the {stats.asked} peer(s) asked answered the {what}; "
            "they may be down or unreachable, so whether anything matches is unknown")

    async def _lookup(self, call: Any) -> Any:
        from dht.errors import DhtError

        try:
            return await asyncio.wait_for(call, self.config.lookup_timeout)
        except asyncio.TimeoutError as exc:
            raise LookupTimedOut("the DHT lookup timed out") from exc
        except DhtError as exc:
            raise LookupUnavailable(f"the DHT lookup failed: {exc}") from exc

    async def share_path(self, path: Path) -> SharedFile | None:
        """Share a file by path; None when hashing outlasts ``share_wait`` (it goes on and
        the file is announced when done; a failure then is logged)."""
        self._tasks = [t for t in self._tasks if not t.done()]
        task = asyncio.create_task(self._share_and_announce(path), name=f"share {path.name}")
        self._tasks.append(task)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.config.share_wait)
        except asyncio.TimeoutError:
            task.add_done_callback(_log_late_failure)
            return None

    async def _share_and_announce(self, path: Path) -> SharedFile:
        entry = await self.catalog.share_path(path)
        if self.announcer is not None:  # None while still joining: the first scan syncs
            await self.announcer.sync()
        return entry

    async def _announce_partial(self, entry: PartialFile) -> None:
        """A partial provider record (no keywords), unless the file is shared in full."""
        if self.dht is None or self.announcer is None or entry.file_id in self.announcer.announced:
            return
        await asyncio.wait_for(self.dht.announce(
            entry.file_id, entry.name, entry.size, self.announcer.grpc_address, partial=True,
        ), self.config.announce_timeout)

    async def _withdraw_partial(self, file_id: str) -> None:
        if self.dht is None or self.announcer is None or file_id in self.announcer.announced:
            return  # shared in full since: its full record replaced the partial one
        await asyncio.wait_for(self.dht.withdraw(file_id), self.config.announce_timeout)

    async def unshare(self, file_id: str) -> SharedFile:
        entry = await self.catalog.unshare(file_id)
        if self.announcer is not None:  # None while still joining: the first scan syncs
            await self.announcer.sync()
        return entry


__all__ = ["Node"]
