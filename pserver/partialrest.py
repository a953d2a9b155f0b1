"""REST calls with which a local client lets its node serve a download in progress
(``pserver.partials``): ``POST /partials``, ``PUT``/``DELETE /partials/<id>``,
``GET /partials``. All writes need the node's token, like ``POST /files``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from pserver.catalog import normalise_file_id
from pserver.errors import PeerError
from pserver.partials import PartialFile, PartialFiles

Guard = Callable[[Callable[..., Awaitable[HTTPResponse]]], Callable[..., Awaitable[HTTPResponse]]]

_REGISTER = ('body must be JSON like {"file_id": HEX64, "path": "/abs/.part", '
             '"leaves": "/abs/leaves", "name": "x.bin", "size": 123}')


def _describe(entry: PartialFile) -> dict[str, Any]:
    return {"file_id": entry.file_id, "name": entry.name, "size": entry.size,
            "path": str(entry.path), "chunks": entry.chunks, "verified": entry.held()}


def _body(request: Request, usage: str) -> dict[str, Any]:
    try:
        body = request.json
    except Exception as exc:  # Sanic raises its own BadRequest subclass
        raise PeerError(usage) from exc
    if not isinstance(body, dict):
        raise PeerError(usage)
    return body


def _abs_path(value: object, what: str) -> Path:
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise PeerError(f"{what} must be an absolute path")
    return Path(value)


def add_partial_routes(app: Sanic, partials: PartialFiles, guarded: Guard) -> None:
    """Register the /partials calls on ``app`` (errors map like every PeerError: 400/404)."""

    @app.get("/partials")
    async def list_partials(request: Request) -> HTTPResponse:
        return json({"partials": [_describe(e) for e in partials.files()]})

    @app.post("/partials")
    @guarded
    async def register_partial(request: Request) -> HTTPResponse:
        body = _body(request, _REGISTER)
        file_id = normalise_file_id(str(body.get("file_id", "")))
        size, name = body.get("size"), body.get("name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise PeerError("size must be a positive integer")
        if not isinstance(name, str) or not name.strip():
            raise PeerError("name must be a non-empty string")
        name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()[:200] or file_id[:16]
        entry = await partials.register(file_id, _abs_path(body.get("path"), "path"),
                                        _abs_path(body.get("leaves"), "leaves"), name, size)
        return json(_describe(entry), status=201)

    @app.put("/partials/<file_id:str>")
    @guarded
    async def update_partial(request: Request, file_id: str) -> HTTPResponse:
        body = _body(request, 'body must be JSON like {"have": HEX-BITFIELD}')
        try:
            have = bytes.fromhex(str(body.get("have", "")))
        except ValueError as exc:
            raise PeerError("have must be the hex of the packed bitfield") from exc
        entry = await partials.update(normalise_file_id(file_id), have)
        return json(_describe(entry))

    @app.delete("/partials/<file_id:str>")
    @guarded
    async def remove_partial(request: Request, file_id: str) -> HTTPResponse:
        entry = await partials.remove(normalise_file_id(file_id))
        return json(_describe(entry))
