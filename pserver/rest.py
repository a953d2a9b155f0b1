"""The Sanic REST app of one peer: docs/ARCHITECTURE.md's read calls, the token-guarded write calls,
Prometheus metrics and an OpenAPI description.

Every answer is JSON (except ``/metrics``); every error is ``{"error": "..."}`` with a
fitting status and never a stack trace. The app talks to its peer only through the
small :class:`PeerApi` protocol, so it carries no DHT or gRPC knowledge of its own.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, JSONResponse, json, raw

from kadcommon.addr import AddressError, format_hostport, parse_hostport
from kadcommon.fileid import AmbiguousPrefix, FileIdError, UnknownPrefix, resolve_prefix
from kadcommon.link import MAX_PEERS, LinkError, parse_link
from pserver.catalog import Catalog, SharedFile
from pserver.config import NodeConfig
from pserver.errors import (
    FileNotShared,
    InvalidFileId,
    LookupTimedOut,
    LookupUnavailable,
    PeerError,
)
from pserver.metrics import PeerMetrics
from pserver.openapi import openapi_document
from pserver.partialrest import add_partial_routes
from pserver.partials import PartialFiles

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 256
MAX_BODY_BYTES = 64 * 1024
_app_numbers = itertools.count(1)


class PeerApi(Protocol):
    """What the REST app needs from its peer (``pserver.node.Node`` implements it)."""

    catalog: Catalog
    metrics: PeerMetrics
    token: str
    partials: PartialFiles

    def status(self) -> dict[str, Any]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    async def search(self, query: str) -> list[dict[str, Any]]: ...
    async def providers(self, file_id: str) -> list[dict[str, Any]]: ...
    async def bootstrap(self, addrs: list[tuple[str, int]]) -> int: ...
    async def share_path(self, path: Path) -> SharedFile | None: ...
    async def unshare(self, file_id: str) -> SharedFile: ...


def _host_part(authority: str) -> str:
    """``host:port`` / ``[v6]:port`` / ``host`` -> host, lowercased."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def browser_refusal(host_header: str, origin: str | None) -> str | None:
    """Why a write call looks driven by a web page, or None.

    DNS rebinding: a page on ``evil.example`` whose name re-resolves to 127.0.0.1 reaches
    the node with ``Host: evil.example``; only IP literals and ``localhost`` are taken.
    Cross-origin: a browser names the page in ``Origin``; it must be this very host.
    """
    host = _host_part(host_header)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            return (f"write calls take Host: an IP address or localhost, not {host_header!r} "
                    "(protection against DNS rebinding)")
    if origin is not None:
        origin_host = _host_part(origin.partition("://")[2].rstrip("/"))
        if origin == "null" or origin_host != host:
            return f"cross-origin write calls are refused (Origin {origin!r})"
    return None


def error(status: int, message: str) -> JSONResponse:
    return json({"error": message}, status=status)


def create_app(peer: PeerApi, config: NodeConfig, name_hint: str = "peer") -> Sanic:
    """A new Sanic app bound to ``peer``; unique name so several can live in one process."""
    safe_hint = "".join(c for c in name_hint if c.isalnum())[:16] or "peer"
    app = Sanic(f"kadshare_{safe_hint}_{next(_app_numbers)}", configure_logging=False)
    app.config.TOUCHUP = False
    app.config.REQUEST_MAX_SIZE = MAX_BODY_BYTES
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.ACCESS_LOG = False
    app.config.KEEP_ALIVE_TIMEOUT = 15
    app.config.RESPONSE_TIMEOUT = config.rest_response_timeout  # > lookup and share waits

    def guarded(
        handler: Callable[..., Awaitable[HTTPResponse]],
    ) -> Callable[..., Awaitable[HTTPResponse]]:
        """Require ``Authorization: Bearer TOKEN``: 401 without it, 403 when wrong."""

        async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            refusal = browser_refusal(request.headers.get("host", ""),
                                      request.headers.get("origin"))
            if refusal:
                return error(403, refusal)
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                return error(401, "this call needs Authorization: Bearer <token from DATA/token>")
            if not hmac.compare_digest(given.strip().encode(), peer.token.encode()):
                return error(403, "wrong token")
            return await handler(request, *args, **kwargs)

        wrapper.__name__ = handler.__name__
        return wrapper

    seen = _SeenIds(config.seen_ids_max)
    add_partial_routes(app, peer.partials, guarded)

    def shared_file_id(value: str) -> str:
        """An id or unique prefix (8+ hex) of one of this peer's own files."""
        own = {entry.file_id: entry.name for entry in peer.catalog.files()}
        for file_id, name in own.items():  # so an ambiguity lists names too
            seen.names.setdefault(file_id, name)
        try:
            return resolve_prefix(value, list(own))
        except FileIdError as exc:
            raise _HttpError(400, str(exc)) from exc
        except UnknownPrefix as exc:
            raise _HttpError(404, f"no file shared here has an id starting {value!r}") from exc

    @app.get("/")
    async def index(request: Request) -> HTTPResponse:
        return json({
            "service": "kadshare node REST API",
            "openapi": "/openapi.json",
            "read": ["/status", "/files", "/files/{file_id}", "/search?q=WORDS",
                     "/providers/{file_id}", "/providers?link=LINK", "/peers", "/metrics"],
            "write (Authorization: Bearer TOKEN)": ["POST /files", "DELETE /files/{file_id}"],
            "write (loopback, or Bearer TOKEN)": ["POST /bootstrap"],
        })

    @app.get("/status")
    async def status(request: Request) -> HTTPResponse:
        return json(peer.status())

    @app.get("/files")
    async def list_files(request: Request) -> HTTPResponse:
        return json({"files": [f.as_json() for f in peer.catalog.files()]})

    @app.get("/files/<file_id:str>")
    async def one_file(request: Request, file_id: str) -> HTTPResponse:
        entry = peer.catalog.get(shared_file_id(file_id))
        return json(entry.as_json())

    @app.post("/files")
    @guarded
    async def share(request: Request) -> HTTPResponse:
        try:
            body = request.json
        except Exception as exc:  # Sanic raises its own BadRequest subclass
            raise _HttpError(400, "body must be JSON like {\"path\": \"/abs/file\"}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("path"), str):
            raise _HttpError(400, "body must be JSON like {\"path\": \"/abs/file\"}")
        path = body["path"]
        if not path or "\x00" in path or not path.startswith("/"):
            raise _HttpError(400, "path must be an absolute path")
        entry = await peer.share_path(Path(path))
        if entry is None:
            return json(
                {"path": path, "status": "hashing",
                 "message": "large file: still hashing; it appears in /files when done"},
                status=202,
            )
        return json(entry.as_json(), status=201)

    @app.delete("/files/<file_id:str>")
    @guarded
    async def unshare(request: Request, file_id: str) -> HTTPResponse:
        entry = await peer.unshare(shared_file_id(file_id))
        return json(entry.as_json())

    @app.get("/search")
    async def search(request: Request) -> HTTPResponse:
        query = (request.args.get("q") or "").strip()
        if not query:
            raise _HttpError(400, "give words to search for: /search?q=WORDS")
        if len(query) > MAX_QUERY_CHARS:
            raise _HttpError(400, f"query longer than {MAX_QUERY_CHARS} characters")
        results = await timed(peer.metrics, "search", peer.search(query))
        await count_providers(results)
        for hit in results:
            seen.add(hit["file_id"], hit["name"])
        return json({"query": query, "results": results})

    async def count_providers(results: list[dict[str, Any]]) -> None:
        """Set each hit's ``providers`` to every peer providing the file.

        A keyword entry only tells who announced the file under a name holding the query
        words; peers that share the same bytes under another name count too, so each
        hit's provider records are looked up (``search_count_parallel`` at once).
        A failed lookup leaves the keyword count.
        """
        gate = asyncio.Semaphore(config.search_count_parallel)

        async def count(hit: dict[str, Any]) -> None:
            async with gate:
                try:
                    found = await timed(peer.metrics, "providers", peer.providers(hit["file_id"]))
                except PeerError as exc:
                    log.info("search: provider count of %s failed: %s", hit["file_id"][:12], exc)
                    return
            nodes = {p.get("node_id") for p in found if isinstance(p, dict)}
            hit["providers"] = max(int(hit.get("providers") or 0), len(nodes))

        await asyncio.gather(*(count(hit) for hit in results))
        results.sort(key=lambda h: (-h["providers"], h["name"], h["file_id"]))

    @app.get("/providers/<file_id:str>")
    async def providers(request: Request, file_id: str) -> HTTPResponse:
        fid = seen.resolve(file_id, peer.catalog)
        found = await timed(peer.metrics, "providers", peer.providers(fid))
        if found:
            seen.add(fid, str(found[0].get("name", "")))
        return json({"file_id": fid, "providers": found})

    @app.get("/providers")
    async def providers_of_link(request: Request) -> HTTPResponse:
        link = _link_arg(request.args.get("link"))
        found = await timed(peer.metrics, "providers", peer.providers(link.file_id))
        seen.add(link.file_id, link.name)
        return json({"file_id": link.file_id, "providers": found, "link": {
            "kind": link.kind, "name": link.name, "size": link.size,
            "peers": [format_hostport(h, p) for h, p in link.peers]}})

    @app.post("/bootstrap")
    async def bootstrap(request: Request) -> HTTPResponse:
        """Join through a link's peer hints; from loopback without a token (a local
        ``kadshare get LINK``), from elsewhere only with it (it makes the node send)."""
        refusal = browser_refusal(request.headers.get("host", ""), request.headers.get("origin"))
        if refusal:
            return error(403, refusal)
        if not _is_loopback(request.ip):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    given.strip().encode(), peer.token.encode()):
                return error(403, "POST /bootstrap from another host needs "
                                  "Authorization: Bearer <token from DATA/token>")
        addrs = _bootstrap_body(request)
        contacts = await peer.bootstrap(addrs)
        return json({"asked": len(addrs), "peers": contacts})

    @app.get("/peers")
    async def peers(request: Request) -> HTTPResponse:
        return json({"peers": peer.peers()})

    @app.get("/metrics")
    async def metrics(request: Request) -> HTTPResponse:
        return raw(peer.metrics.render(), content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    async def openapi(request: Request) -> HTTPResponse:
        return json(openapi_document())

    @app.exception(Exception)
    async def on_error(request: Request, exc: Exception) -> HTTPResponse:
        if isinstance(exc, _HttpError):
            return error(exc.status, str(exc))
        if isinstance(exc, AmbiguousPrefix):
            return json({"error": str(exc), "candidates": seen.describe(exc.candidates)},
                        status=409)
        if isinstance(exc, InvalidFileId):
            return error(400, str(exc))
        if isinstance(exc, FileNotShared):
            return error(404, str(exc))
        if isinstance(exc, LookupTimedOut):
            return error(504, str(exc))
        if isinstance(exc, LookupUnavailable):
            return error(503, str(exc))
        if isinstance(exc, PeerError):
            return error(400, str(exc))
        if isinstance(exc, SanicException):
            status = int(getattr(exc, "status_code", 500) or 500)
            message = str(exc) or "error"
            if status == 404:
                message = f"no such call: {request.method} {request.path}"
            elif status == 405:
                message = f"{request.method} is not allowed on {request.path}"
            return error(status, message)
        log.exception("REST %s %s failed", request.method, request.path)
        return error(500, "internal error (see the node's log)")

    return app


def _link_arg(text: str | None) -> Any:
    if not text:
        raise _HttpError(400, "give a share link: /providers?link=kadshare:file?id=...")
    try:
        return parse_link(text)
    except LinkError as exc:
        raise _HttpError(400, str(exc)) from None


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.strip("[]")).is_loopback
    except ValueError:
        return False


def _bootstrap_body(request: Request) -> list[tuple[str, int]]:
    """``{"link": LINK}`` or ``{"peers": ["HOST:PORT", ...]}`` -> addresses."""
    usage = 'body must be JSON like {"link": "kadshare:..."} or {"peers": ["HOST:PORT"]}'
    try:
        body = request.json
    except Exception as exc:  # Sanic raises its own BadRequest subclass
        raise _HttpError(400, usage) from exc
    if isinstance(body, dict) and isinstance(body.get("link"), str):
        return list(_link_arg(body["link"]).peers)
    peers = body.get("peers") if isinstance(body, dict) else None
    if not isinstance(peers, list) or not 1 <= len(peers) <= MAX_PEERS:
        raise _HttpError(400, f"{usage} (1..{MAX_PEERS} peers)")
    try:
        return [parse_hostport(p) for p in peers]
    except (AddressError, TypeError) as exc:
        raise _HttpError(400, f"bad peer address: {exc}") from None


class _SeenIds:
    """File ids this node answered about lately (bounded, newest kept), with a name each.

    A prefix is resolved against them and the node's own files, like git resolves an
    abbreviated commit against the objects it has: the ids a person copies from
    ``search`` or ``ls`` through this node are the ones it can expand.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.names: OrderedDict[str, str] = OrderedDict()

    def add(self, file_id: str, name: str) -> None:
        self.names[file_id] = name
        self.names.move_to_end(file_id)
        while len(self.names) > self.limit:
            self.names.popitem(last=False)

    def resolve(self, text: str, catalog: Catalog) -> str:
        """The full id for ``text`` (an id or a unique prefix of 8+ hex characters)."""
        for entry in catalog.files():
            self.names.setdefault(entry.file_id, entry.name)
        try:
            return resolve_prefix(text, list(self.names))
        except FileIdError as exc:
            raise _HttpError(400, str(exc)) from exc
        except UnknownPrefix as exc:
            raise _HttpError(404, str(exc)) from exc

    def describe(self, ids: list[str]) -> list[dict[str, str]]:
        return [{"file_id": i, "name": self.names.get(i, "")} for i in ids]


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def timed(metrics: PeerMetrics, kind: str, call: Awaitable[Any]) -> Any:
    """Await a DHT lookup, counting it and its latency in the metrics."""
    started = time.perf_counter()
    outcome = "error"
    try:
        result = await call
        outcome = "ok"
        return result
    finally:
        metrics.lookups.labels(kind, outcome).inc()
        metrics.lookup_seconds.labels(kind).observe(time.perf_counter() - started)
