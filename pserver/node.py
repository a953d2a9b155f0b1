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
import random
import socket
from pathlib import Path
from typing import Any

from sanic import Sanic

from dht import DhtConfig, DhtNode, Identity, LookupStats
from kadcommon.addr import format_hostport
from kadcommon.atomic import write_atomic
from pserver.announcer import Announcer
from pserver.catalog import Catalog, SharedFile
from pserver.config import LIVENESS_PINGS_PER_SWEEP, NodeConfig
from pserver.datadir import (
    DataDirLock,
    load_msgpack,
    load_or_create_token,
    remove_stale_temps,
    save_msgpack,
)
from pserver.errors import ConfigError, LookupTimedOut, LookupUnavailable, PeerError
from pserver.metrics import PeerMetrics
from pserver.ports import check_listen_addresses
from pserver.rest import create_app
from pserver.transfer import TransferServicer, start_grpc_server

log = logging.getLogger(__name__)

CONTACTS_FILE = "contacts.msgpack"
MAX_SAVED_CONTACTS = 64
BOOTSTRAP_TIMEOUT = 30.0
#: Seconds between checks for an empty routing table (then the node rejoins).
REJOIN_CHECK_SECONDS = 5.0
LEAVE_TIMEOUT = 15.0


def _log_late_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("sharing by path failed: %s", task.exception())


def advertised_host(host: str, bootstrap: tuple[tuple[str, int], ...]) -> str:
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


class Node:
    """A running peer. Use :meth:`start`; ``info`` is the JSON line; :meth:`stop` ends it."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = PeerMetrics()
        self.catalog = Catalog(
            config.share_dir, config.data_dir, config.chunk_size, config.settle_seconds
        )
        self.token = ""
        self.info: dict[str, Any] = {}
        self.dht: DhtNode | None = None
        self.announcer: Announcer | None = None
        self._lock = DataDirLock(config.data_dir)
        self._grpc: Any = None
        self._health: Any = None
        self._app: Sanic | None = None
        self._rest: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()
        self._stopping = False
        self._saved_contacts: list[list[Any]] = []

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
        self.catalog.remove_stale_uploads()
        self.dht = DhtNode(identity=identity, config=cfg.dht_config or DhtConfig())
        await self.dht.listen(port=cfg.dht_port, interface=cfg.host)
        servicer = TransferServicer(
            self.catalog, cfg, self.metrics, self._after_upload, token=self.token
        )
        self._grpc, grpc_port, self._health = await start_grpc_server(
            servicer, cfg.host, cfg.grpc_port
        )
        rest_port = await self._start_rest()
        self.metrics.on_scrape(self._refresh_gauges)
        dht = self.dht
        self.metrics.add_dht_stats(lambda: dht.stats)  # read at each scrape
        joined_through = await self._join()
        advertised = advertised_host(cfg.host, joined_through)
        self.announcer = Announcer(self.dht, self.catalog, format_hostport(advertised, grpc_port))
        self.catalog.on_progress = self.announcer.sync
        self._save_contacts()  # so a crash right after joining can still rejoin
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
        }
        write_atomic(cfg.data_dir / "node.json", (json.dumps(self.info) + "\n").encode())
        self._tasks.append(asyncio.create_task(self._scan_loop(first), name="scan"))
        self._tasks.append(asyncio.create_task(self._contacts_loop(), name="contacts"))
        if cfg.liveness_interval > 0:
            self._tasks.append(asyncio.create_task(self._liveness_loop(), name="liveness"))
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

    async def _start_rest(self) -> int:
        cfg = self.config
        family = socket.AF_INET6 if ":" in cfg.rest_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((cfg.rest_host, cfg.rest_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        assert self.dht is not None
        self._app = create_app(self, name_hint=self.dht.node_id[:8])
        server = await self._app.create_server(
            sock=sock, return_asyncio_server=True, access_log=False
        )
        if server is None:
            sock.close()
            raise OSError("Sanic did not create a server")
        # create_server already awaited the listening server; run the lifecycle events.
        await server.startup()
        await server.before_start()
        await server.after_start()
        self._rest = server
        return int(sock.getsockname()[1])

    async def _join(self) -> tuple[tuple[str, int], ...]:
        """Bootstrap from the given addresses, else from the contacts of the last run;
        returns the addresses tried."""
        assert self.dht is not None
        targets = list(self.config.bootstrap)
        if not targets:
            saved = load_msgpack(self.config.data_dir / CONTACTS_FILE, [])
            targets = [
                (str(c[0]), int(c[1]))
                for c in saved
                if isinstance(c, list | tuple) and len(c) == 2 and isinstance(c[1], int)
            ] if isinstance(saved, list) else []
            if targets:
                log.info("rejoining through %d saved contacts", len(targets))
        if not targets:
            log.info("no bootstrap: first node of a new network")
            return ()
        try:
            await asyncio.wait_for(self.dht.bootstrap(targets), BOOTSTRAP_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer keeps running and can be reached later
            log.warning("bootstrap failed (%s); continuing alone", exc or type(exc).__name__)
        return tuple(targets)

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
            self._save_contacts()
            if self._health is not None:
                with contextlib.suppress(Exception):
                    await self._health.enter_graceful_shutdown()
            if self.dht is not None:
                await self._stop_dht(graceful)
            if self._grpc is not None:
                await self._grpc.stop(grace=1.0 if graceful else None)
            await self._stop_rest()
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
                await asyncio.wait_for(self.dht.leave(), LEAVE_TIMEOUT)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("graceful leave failed (%s); stopping", exc or type(exc).__name__)
        with contextlib.suppress(Exception):
            self.dht.stop()

    async def _stop_rest(self) -> None:
        server, app = self._rest, self._app
        if server is not None:
            with contextlib.suppress(Exception):
                await server.before_stop()
            server.close()
            for conn in list(server.connections):
                conn.close_if_idle()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5.0)
            with contextlib.suppress(Exception):
                await server.after_stop()
        if app is not None:
            with contextlib.suppress(Exception):
                Sanic.unregister_app(app)

    # ---- background work ---------------------------------------------------------

    async def _index_once(self) -> None:
        try:
            await self.catalog.scan()
        except OSError as exc:
            log.warning("scanning the share folder failed: %s", exc)
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

    async def _contacts_loop(self) -> None:
        """Save contacts now and then; rejoin when an outage or partition emptied the table."""
        waited = 0.0
        step = min(self.config.contacts_interval, REJOIN_CHECK_SECONDS)
        backoff = next_try = 0.0
        while True:
            await asyncio.sleep(step)
            waited += step
            next_try -= step
            if next_try <= 0 and self.dht is not None and not self.dht.contacts():
                joined = await self._rejoin_if_alone()
                backoff = 0.0 if joined else min(max(backoff * 2, step), 300.0)
                next_try = backoff  # a long outage: retry at most every 5 min
            if waited >= self.config.contacts_interval:
                waited = 0.0
                self._save_contacts()

    async def _liveness_loop(self) -> None:
        """Ping contacts that have been silent, so ``/peers`` shows who is there now.

        Sweeps are jittered (0.75-1.25 x the interval) so peers started together do not
        ping in waves; each pings at most ``LIVENESS_PINGS_PER_SWEEP`` contacts.
        """
        every = self.config.liveness_interval
        while True:
            await asyncio.sleep(every * random.uniform(0.75, 1.25))
            if self.dht is None:
                continue
            try:
                await self.dht.check_contacts(2 * every, LIVENESS_PINGS_PER_SWEEP)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("liveness sweep failed; retrying")

    async def _rejoin_if_alone(self) -> bool:
        """A table emptied by a cut never refills by itself (nobody left to ask)."""
        if self.dht is None or self.dht.contacts():
            return True
        saved = load_msgpack(self.config.data_dir / CONTACTS_FILE, [])
        targets = list(self.config.bootstrap) + [
            (str(c[0]), int(c[1]))
            for c in (saved if isinstance(saved, list) else [])
            if isinstance(c, list | tuple) and len(c) == 2 and isinstance(c[1], int)
        ]
        if not targets:
            return False
        try:
            found = await asyncio.wait_for(self.dht.bootstrap(targets), BOOTSTRAP_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("rejoin failed: %s", exc or type(exc).__name__)
            return False
        if found:
            log.info("routing table was empty; rejoined with %d contacts", found)
        return bool(found)

    def _save_contacts(self) -> None:
        if self.dht is None:
            return
        try:
            contacts = [[c.host, c.port] for c in self.dht.contacts()][:MAX_SAVED_CONTACTS]
            if contacts and contacts != self._saved_contacts:
                save_msgpack(self.config.data_dir / CONTACTS_FILE, contacts)
                self._saved_contacts = contacts
        except Exception as exc:  # never let bookkeeping stop a shutdown
            log.warning("saving contacts failed: %s", exc)

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
                "expires": int(r.expires),
            }
            for r in records
        ]

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

    async def unshare(self, file_id: str) -> SharedFile:
        entry = await self.catalog.unshare(file_id)
        if self.announcer is not None:  # None while still joining: the first scan syncs
            await self.announcer.sync()
        return entry


__all__ = ["Node", "NodeConfig", "PeerError"]
