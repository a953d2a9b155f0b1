"""OpenAPI 3.1 description of the peer's REST API (served at ``GET /openapi.json``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pserver import __version__

_ID = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256 of the content"}
_FILE = {
    "type": "object",
    "required": ["file_id", "name", "size"],
    "properties": {"file_id": _ID, "name": {"type": "string"}, "size": {"type": "integer"}},
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _ok({"$ref": "#/components/schemas/Error"}, description)


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "properties": props}


_PATH_ID = {"name": "file_id", "in": "path", "required": True, "schema": _ID}
_PATH_PREFIX = {"name": "file_id", "in": "path", "required": True,
                "description": "a file id or a unique prefix of at least 8 hex characters",
                "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{8,64}$"}}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The document; built once."""
    file_ref = {"$ref": "#/components/schemas/File"}
    integer, string = {"type": "integer"}, {"type": "string"}
    partial_ref = _obj(file_id=_ID, name=string, size=integer, path=string, chunks=integer,
                       verified=integer)
    return {
        "openapi": "3.1.0",
        "info": {"title": "kadshare peer", "version": __version__},
        "components": {
            "schemas": {"File": _FILE, "Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "token from DATA/token"}},
        },
        "paths": {
            "/status": {"get": {"summary": "This node's id, ports and counts", "responses": {
                "200": _ok(_obj(node_id=string, host=string, dht_port=integer,
                                grpc_port=integer, rest_port=integer, peers=integer,
                                files=integer, records=integer,
                                transfers={"type": "string", "enum": ["tls", "plaintext"]},
                                network=string))}}},
            "/files": {
                "get": {"summary": "Files this peer shares", "responses": {
                    "200": _ok(_obj(files={"type": "array", "items": file_ref}))}},
                "post": {
                    "summary": "Share a file on this machine by absolute path",
                    "security": _AUTH,
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": _obj(path=string)}}},
                    "responses": {"201": _ok(file_ref, "Shared"),
                                  "202": _ok(_obj(path=string, status=string, message=string),
                                             "Large file: hashing goes on"),
                                  "400": _err("Bad path"),
                                  "401": _err("No token"), "403": _err("Wrong token")},
                },
            },
            "/files/{file_id}": {
                "parameters": [_PATH_ID],
                "get": {"summary": "One shared file", "responses": {
                    "200": _ok(file_ref), "400": _err("Malformed id"),
                    "404": _err("Not shared here")}},
                "delete": {"summary": "Stop sharing a file (disk untouched)", "security": _AUTH,
                           "responses": {"200": _ok(file_ref, "Unshared"),
                                         "400": _err("Malformed id"),
                                         "401": _err("No token"), "403": _err("Wrong token"),
                                         "404": _err("Not shared here")}},
            },
            "/partials": {
                "get": {"summary": "Downloads in progress this node serves chunks of",
                        "responses": {"200": _ok(_obj(partials={"type": "array",
                                                                "items": partial_ref}))}},
                "post": {
                    "summary": "Serve the verified chunks of a download in progress "
                               "(docs/PROTOCOL.md, Swarming)",
                    "security": _AUTH,
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": _obj(file_id=_ID, path=string, leaves=string, name=string,
                                       size=integer)}}},
                    "responses": {"201": _ok(partial_ref, "Served"), "400": _err("Refused"),
                                  "401": _err("No token"), "403": _err("Wrong token")},
                },
            },
            "/partials/{file_id}": {
                "parameters": [_PATH_ID],
                "put": {"summary": "Chunks written so far (hex bitfield); renews the lease",
                        "security": _AUTH,
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": _obj(have=string)}}},
                        "responses": {"200": _ok(partial_ref), "400": _err("Bad bitfield"),
                                      "404": _err("Not registered")}},
                "delete": {"summary": "Stop serving a download in progress", "security": _AUTH,
                           "responses": {"200": _ok(partial_ref),
                                         "404": _err("Not registered")}},
            },
            "/search": {"get": {
                "summary": "Network-wide keyword search",
                "parameters": [{"name": "q", "in": "query", "required": True,
                                "schema": {"type": "string", "minLength": 1}}],
                "responses": {
                    "200": _ok(_obj(query=string, results={"type": "array", "items": _obj(
                        file_id=_ID, name=string, size=integer, providers=integer)})),
                    "400": _err("Empty or too long query"),
                    "503": _err("No peer answered (whether anything matches is unknown)"),
                    "504": _err("The lookup timed out")}}},
            "/providers/{file_id}": {"parameters": [_PATH_PREFIX], "get": {
                "summary": "Who provides a file, network-wide",
                "responses": {
                    "200": _ok(_obj(file_id=_ID, providers={"type": "array", "items": _obj(
                        node_id=string, grpc=string, name=string, size=integer,
                        expires=integer, partial={"type": "boolean"})})),
                    "400": _err("Malformed id or prefix (at least 8 hex characters)"),
                    "404": _err("No id this node knows starts with the prefix"),
                    "409": _err("Ambiguous prefix; the body also lists 'candidates' "
                                "[{file_id, name}]"),
                    "503": _err("No peer answered (whether anyone provides it is unknown)"),
                    "504": _err("The lookup timed out")}}},
            "/providers": {"get": {
                "summary": "Who provides the file of a share link (kadshare:file?id=...)",
                "parameters": [{"name": "link", "in": "query", "required": True,
                                "schema": {"type": "string", "minLength": 1}}],
                "responses": {
                    "200": _ok(_obj(file_id=_ID, providers={"type": "array"},
                                    link=_obj(kind=string, name=string, size=integer,
                                              peers={"type": "array"}))),
                    "400": _err("Missing or malformed link (the error says what is wrong)"),
                    "503": _err("No peer answered (whether anyone provides it is unknown)"),
                    "504": _err("The lookup timed out")}}},
            "/bootstrap": {"post": {
                "summary": "Join the network through a link's peers or given DHT addresses; "
                           "loopback callers need no token, others Authorization: Bearer",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "object", "properties": {
                        "link": string, "peers": {"type": "array", "items": string}}}}}},
                "responses": {
                    "200": _ok(_obj(asked=integer, peers=integer)),
                    "400": _err("Malformed body, link or address"),
                    "403": _err("Not from loopback and no or a wrong token, or a browser")}}},
            "/peers": {"get": {"summary": "This node's routing table", "responses": {
                "200": _ok(_obj(peers={"type": "array", "items": _obj(
                    node_id=string, host=string, dht_port=integer)}))}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": string}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": _ok({"type": "object"})}}},
        },
    }
