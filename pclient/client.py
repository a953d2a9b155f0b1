"""``Client``: the kadshare library API over a node's REST API and providers' gRPC.

A client never touches peer internals: listing, search and provider lookup go to one
node over REST (docs/ARCHITECTURE.md's table), bytes come from providers over ``TransferService``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx

from kadcommon.fileid import FileIdError, is_id_prefix, normalise_file_id, normalise_prefix
from kadcommon.link import Link, format_link
from kadcommon.merkle import hash_file as merkle_hash_file
from kadcommon.tlsid import PeerIdentityError
from pclient.download import (
    DownloadConfig,
    DownloadResult,
    NodeSwarm,
    ProgressCallback,
    download_file,
    is_file_id,
    pick_name,
)
from pclient.errors import (
    AmbiguousId,
    AmbiguousName,
    BadFileId,
    ClientError,
    NoAnswer,
    NodeError,
    NodeUnreachable,
    NoProviders,
    NotFound,
    UploadFailed,
)
from pclient.grpcutil import Dialer, describe_rpc_error, network_key_from_env, unreachable_reason
from protos import kadshare_pb2, kadshare_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_NODE_URL = "http://127.0.0.1:8000"
DEFAULT_REST_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
DEFAULT_UPLOAD_TIMEOUT = 3600.0
UPLOAD_MESSAGE_BYTES = 1024 * 1024

UploadProgress = Callable[[int, int], None]
"""Called with (bytes sent, total bytes) while an upload streams."""


def _require(doc: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(doc, dict) or not isinstance(doc.get(key), kind):
        raise NodeError(f"the node's answer lacks a valid {key!r} field")
    return doc[key]


class Client:
    """Async client of one kadshare node.

    ``async with Client(url) as c: await c.search("words")``. Every call has a timeout;
    failures raise ``ClientError`` subclasses whose text is meant for a person. With
    the node's ``token`` (its DATA/token) downloads swarm: the node serves the chunks
    already fetched to other downloaders while the download runs.
    """

    def __init__(self, node_url: str = DEFAULT_NODE_URL, *, timeout: float = DEFAULT_REST_TIMEOUT,
                 token: str | None = None):
        self.node_url = node_url.rstrip("/")
        self.token = token
        self._tls: bool | None = None  # learned from the node's status (``transfers``)
        # TCP connect and TLS handshake get a short bound: a plain-HTTP node asked over
        # https:// never completes the handshake and would otherwise hang for ``timeout``
        self._http = httpx.AsyncClient(
            base_url=self.node_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
        )

    def __repr__(self) -> str:
        return f"Client({self.node_url!r})"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- REST ------------------------------------------------------------------------
    async def _get(self, path: str, params: dict[str, str] | None = None,
                   body: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET ``path`` (POST when a JSON ``body`` is given); the answer's JSON object."""
        try:
            if body is None:
                resp = await self._http.get(path, params=params)
            else:
                resp = await self._http.post(path, json=body)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise NodeUnreachable(self.node_url, "not an http:// or https:// URL") from exc
        except (httpx.ConnectTimeout, httpx.ConnectError) as exc:
            if self.node_url.startswith("https://") and await self._speaks_plain_http():
                plain = "http://" + self.node_url[len("https://"):]
                raise NodeUnreachable(
                    self.node_url, f"it speaks plain HTTP, not HTTPS: use --node {plain}",
                    how_to_start=False,
                ) from exc
            why = "timed out" if isinstance(exc, httpx.ConnectTimeout) else "connection refused"
            raise NodeUnreachable(self.node_url, why) from exc
        except httpx.TimeoutException as exc:
            raise NodeUnreachable(self.node_url, "timed out") from exc
        except httpx.RemoteProtocolError as exc:
            raise NodeUnreachable(
                self.node_url, "it does not answer HTTP; is that a gRPC or DHT port?"
            ) from exc
        except (httpx.TransportError, ValueError) as exc:
            raise NodeUnreachable(self.node_url, type(exc).__name__) from exc
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if resp.status_code >= 400:
            error = doc.get("error") if isinstance(doc, dict) else None
            if not error:
                raise NodeError(
                    f"{self.node_url}{path} answered HTTP {resp.status_code} without a "
                    f"kadshare error; is {self.node_url} the REST address of a kadshare node?",
                    resp.status_code,
                )
            if resp.status_code == 404:
                raise NotFound(str(error))
            if resp.status_code in (503, 504):
                raise NoAnswer(
                    f"no answer from the network (asked through {self.node_url}): {error}",
                    resp.status_code,
                )
            if resp.status_code == 409 and isinstance(doc.get("candidates"), list):
                raise AmbiguousId(str(error), [c for c in doc["candidates"]
                                               if isinstance(c, dict) and "file_id" in c])
            raise NodeError(
                f"node {self.node_url} could not answer {path}: {error} "
                f"(HTTP {resp.status_code})",
                resp.status_code,
            )
        if not isinstance(doc, dict):
            raise NodeError(f"{self.node_url}{path} did not answer with a JSON object")
        return doc

    async def _speaks_plain_http(self) -> bool:
        """True if the node's host:port answers plain HTTP (asked after TLS failed)."""
        url = "http://" + self.node_url[len("https://"):] + "/status"
        try:
            async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT) as plain:
                await plain.get(url)
        except httpx.HTTPError:
            return False
        return True

    async def status(self) -> dict[str, Any]:
        """``GET /status``: this node's id, ports and counts."""
        doc = await self._get("/status")
        _require(doc, "node_id", str)
        return doc

    async def dialer(self, expected: dict[str, str] | None = None) -> Dialer:
        """How to reach providers: TLS unless this node runs ``--insecure-transfers``
        (its status says so), with the network key of ``KADSHARE_NETWORK_KEY``."""
        if self._tls is None:
            self._tls = (await self.status()).get("transfers", "tls") != "plaintext"
        try:
            netkey = network_key_from_env()
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        return Dialer(expected, tls=self._tls, netkey=netkey)

    async def files(self) -> list[dict[str, Any]]:
        """``GET /files``: files this node shares."""
        return list(_require(await self._get("/files"), "files", list))

    async def search(self, query: str) -> list[dict[str, Any]]:
        """``GET /search?q=``: network-wide keyword search (``providers`` is a count).

        An empty list means peers answered and nothing matches; NoAnswer means no peer
        answered.
        """
        if not query.strip():
            raise ClientError("give at least one word to search for")
        return list(_require(await self._get("/search", {"q": query}), "results", list))

    async def providers(self, file_id: str) -> list[dict[str, Any]]:
        """``GET /providers/{id}``: who provides a file (``grpc`` is ``host:port``)."""
        return (await self.find_providers(file_id))[1]

    async def find_providers(self, file_id: str) -> tuple[str, list[dict[str, Any]]]:
        """(full id, providers) of a file id or a unique prefix of 8+ hex characters.

        The node expands the prefix against the ids it knows; an unknown prefix raises
        NotFound, an ambiguous one AmbiguousId listing the full ids.
        """
        file_id = check_file_id(file_id, prefix=True)
        try:
            doc = await self._get(f"/providers/{file_id}")
        except NotFound:
            if len(file_id) < 64:
                raise
            return file_id, []
        full = _require(doc, "file_id", str).lower()
        if not full.startswith(file_id):
            raise NodeError(f"the node answered for {full[:16]}…, not {file_id}")
        return full, list(_require(doc, "providers", list))

    async def bootstrap(self, link: Link) -> int:
        """``POST /bootstrap``: the node joins through the link's peers; its live contacts."""
        doc = await self._get("/bootstrap", body={"link": format_link(link)})
        return int(_require(doc, "peers", int))

    async def link_for(self, file_id: str, *, name: str = "", size: int | None = None) -> Link:
        """A share link for ``file_id``: name and size as given, else from its providers
        (the node's own files first); the node's DHT address as the bootstrap hint."""
        for entry in [] if size is not None else await self.files():
            if isinstance(entry, dict) and entry.get("file_id") == file_id:
                name, size = str(entry.get("name", "")), entry.get("size")
        if size is None:
            found = [p for p in (await self.find_providers(file_id))[1] if isinstance(p, dict)]
            if not found:
                raise NoProviders(f"nobody provides {file_id[:16]}… right now, so no link "
                                  f"(asked the node at {self.node_url})")
            name = pick_name([p["name"] for p in found if isinstance(p.get("name"), str)])
            size = found[0].get("size")
        if not isinstance(size, int):
            raise NodeError(f"the node gave no size for {file_id[:16]}…")
        status = await self.status()
        host = str(status.get("host", ""))
        if host in ("", "0.0.0.0", "::"):  # a wildcard bind: the host we reach it by
            host = httpx.URL(self.node_url).host or "127.0.0.1"
        port = _require(status, "dht_port", int)
        kind = "folder" if name.endswith(".kadfolder") else "file"  # kadcommon.manifest.SUFFIX
        return Link(file_id, name.rsplit("/", 1)[-1] or file_id[:12], size, ((host, port),), kind)

    async def peers(self) -> list[dict[str, Any]]:
        """``GET /peers``: the node's routing table."""
        return list(_require(await self._get("/peers"), "peers", list))

    async def resolve(self, file: str) -> dict[str, Any]:
        """Turn a file id or a name into a search hit ``{file_id, name, size, ...}``.

        A 64-hex argument is an id. A name is searched: an exact name match wins (if
        all exact matches are one file), else a single hit is taken; none raises
        NotFound, several raise AmbiguousName listing them.
        """
        if is_file_id(file):
            return {"file_id": file.lower(), "name": "", "size": None}
        prefix_miss: NotFound | None = None
        if is_id_prefix(file):
            try:
                full, _found = await self.find_providers(file)
                return {"file_id": full, "name": "", "size": None}
            except NotFound as exc:  # may still be a name, e.g. "20240101.jpg" without ext
                prefix_miss = exc
        try:
            found = await self.search(file)
        except NodeError as exc:
            if exc.status != 400:
                raise
            found = []  # no searchable word in the name (the node refuses an empty query)
        except ClientError as exc:
            if type(exc) is not ClientError:
                raise
            found = []  # only blanks
        hits = [h for h in found if isinstance(h, dict) and "file_id" in h]
        exact = [h for h in hits if h.get("name") == file]
        if not exact:
            exact = [h for h in hits if str(h.get("name", "")).rsplit("/", 1)[-1] == file]
        candidates = exact or hits
        ids = {h["file_id"] for h in candidates}
        if len(ids) == 1:
            return candidates[0]
        if not ids:
            if prefix_miss is not None:
                raise NotFound(f"no file named {file!r} found on the network, and "
                               f"{prefix_miss}")
            raise NotFound(f"no file named {file!r} found on the network")
        raise AmbiguousName(file, candidates)

    # -- transfers -------------------------------------------------------------------
    async def download(
        self,
        file_id: str,
        dest: str | os.PathLike[str],
        sources: int = 4,
        progress: ProgressCallback | None = None,
        *,
        providers: list[str] | None = None,
        config: DownloadConfig | None = None,
        name: str | None = None,
        swarm: bool = True,
    ) -> DownloadResult:
        """Download ``file_id`` to ``dest`` (a folder or a file path) from up to ``sources``
        peers.

        ``providers`` (gRPC ``host:port`` list) skips the node's provider lookup. The file
        is saved as ``name`` if given, else under the name most providers announce.
        ``swarm`` (with the client's token): the node serves the chunks fetched so far
        as a partial provider, and partial providers that appear become sources.
        """
        file_id = check_file_id(file_id)
        helper: NodeSwarm | None = None
        if swarm and self.token:
            own = str((await self.status()).get("node_id", ""))
            helper = NodeSwarm(self.node_url, self.token, file_id, own)
        if config is None:
            config = DownloadConfig(sources=sources)
        expected: dict[str, str] = {}
        if providers is None:
            found = [p for p in await self.providers(file_id) if isinstance(p, dict)
                     and (helper is None or p.get("node_id") != helper.me)]
            providers = [str(p["grpc"]) for p in found if p.get("grpc")]
            # each address must prove the node id of the record naming it
            expected = {str(p["grpc"]): str(p.get("node_id", "")) for p in found
                        if p.get("grpc") and p.get("node_id")}
            if name is None:
                name = pick_name([p["name"] for p in found if isinstance(p.get("name"), str)])
                name = name or None
            if not providers:
                raise NoProviders(
                    f"nobody provides {file_id[:16]}… right now "
                    f"(asked the node at {self.node_url})"
                )
        try:
            return await download_file(
                file_id, dest, providers, config=config, progress=progress, name=name,
                dialer=await self.dialer(expected), swarm=helper,
            )
        finally:
            if helper is not None:
                await helper.close()

    async def upload(
        self,
        path: str | os.PathLike[str],
        peer_grpc: str,
        progress: UploadProgress | None = None,
        *,
        name: str | None = None,
        timeout: float = DEFAULT_UPLOAD_TIMEOUT,
    ) -> dict[str, Any]:
        """Send a local file to the peer at ``peer_grpc``; returns ``{file_id, name, size}``."""
        return await upload_file(path, peer_grpc, progress, name=name, timeout=timeout,
                                 dialer=await self.dialer())


def check_file_id(file_id: str, *, prefix: bool = False) -> str:
    """The lowercase id (or, with ``prefix``, id prefix), else BadFileId saying why."""
    try:
        return normalise_prefix(file_id) if prefix else normalise_file_id(file_id)
    except FileIdError as exc:
        raise BadFileId(f"{exc} (shown by `kadshare search` and `kadshare ls`)") from exc


async def upload_file(
    path: str | os.PathLike[str],
    peer_grpc: str,
    progress: UploadProgress | None = None,
    *,
    name: str | None = None,
    timeout: float = DEFAULT_UPLOAD_TIMEOUT,
    token: str | None = None,
    dialer: Dialer | None = None,
) -> dict[str, Any]:
    """Stream ``path`` to a peer's ``Upload`` RPC: header (name, size, Merkle file id), then data.

    ``token`` is the receiving node's token (its DATA/token); a peer started with a plain
    ``--accept-uploads`` refuses uploads without it. ``name`` may be a relative path
    (``DIR/NAME``); one ending in ``/`` creates that folder. ``dialer``: TLS to any node identity
    and ``KADSHARE_NETWORK_KEY``'s network unless given.
    """
    src = Path(path)
    folder = bool(name and name.endswith("/"))  # a folder to create: no bytes, no id
    try:
        size, digest = (0, "") if folder else await asyncio.to_thread(_size_and_file_id, src)
    except OSError as exc:
        raise UploadFailed(f"cannot read {src}: {(exc.strerror or str(exc)).lower()}") from exc
    header = kadshare_pb2.UploadHeader(name=name or src.name, size=size, file_id=digest)

    async def messages() -> AsyncIterator[kadshare_pb2.UploadMessage]:
        yield kadshare_pb2.UploadMessage(header=header)
        if folder:
            return
        sent = 0
        if progress:
            progress(0, size)
        with open(src, "rb") as fh:  # noqa: ASYNC230 - 1 MiB reads between sends
            while data := fh.read(UPLOAD_MESSAGE_BYTES):
                yield kadshare_pb2.UploadMessage(data=data)
                sent += len(data)
                if progress:
                    progress(sent, size)

    try:
        if dialer is None:
            dialer = Dialer(netkey=network_key_from_env())
        channel = await dialer.open(peer_grpc)
    except (PeerIdentityError, ValueError) as exc:
        raise UploadFailed(f"upload of {src.name} to {peer_grpc} refused: {exc}") from exc
    except OSError as exc:
        raise UploadFailed(f"upload of {src.name} to {peer_grpc} failed: cannot reach it "
                           f"({unreachable_reason(str(exc))})") from exc
    try:
        stub = kadshare_pb2_grpc.TransferServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        reply = await stub.Upload(messages(), timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            why = "it accepts uploads only with its token (give --token or KADSHARE_TOKEN)"
        elif code == grpc.StatusCode.PERMISSION_DENIED:
            why = "it does not accept uploads"
            if exc.details():
                why += f" ({exc.details()})"
        elif code == grpc.StatusCode.UNAVAILABLE:
            reason = unreachable_reason(exc.details() or "")
            why = reason if "REST port" in reason else f"cannot reach it ({reason})"
        else:
            why = describe_rpc_error(exc)
        raise UploadFailed(f"upload of {src.name} to {peer_grpc} failed: {why}") from exc
    finally:
        await channel.close()
    return {"file_id": reply.file_id, "name": reply.name, "size": reply.size, "peer": peer_grpc}


def _size_and_file_id(path: Path) -> tuple[int, str]:
    path.stat()  # OSError (e.g. missing file) is reported by the caller
    if not path.is_file():
        raise UploadFailed(f"cannot read {path}: not a regular file")
    file_id, _leaves, before = merkle_hash_file(path)
    return before.st_size, file_id
