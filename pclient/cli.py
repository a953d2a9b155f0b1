"""kadshare — find, fetch and share files on a kadshare network.

Usage:
  kadshare search WORDS... [--node URL] [--json] [-v]
  kadshare providers FILE_ID [--node URL] [--json] [-v]
  kadshare get FILE [-o PATH] [--sources N] [--from ADDR]... [--force] [--timeout S]
               [--max-rate RATE] [--node URL] [--json] [-v]
  kadshare put PATH --to ADDR [--name NAME] [--token TOKEN] [--node URL] [--json] [-v]
  kadshare ls [--node URL] [--json] [-v]
  kadshare id PATH [--json] [-v]
  kadshare link TARGET [--node URL] [--json] [-v]
  kadshare peers [--node URL] [--json] [-v]
  kadshare status [--node URL] [--json] [-v]
  kadshare (-h | --help)
  kadshare --version

Commands:
  search     Find files on the network by words of their names.
  providers  List the peers that provide a file.
  get        Download a file by id or by name: several sources at once, every chunk
             verified, resumable (run the same command again after an interruption).
  put        Upload a file, or a folder with everything in it, to a peer that accepts
             uploads (ADDR is HOST:GRPC_PORT).
  ls         Files shared by the node.
  id         Print the file id of a local file (no node needed): the id others find
             it by once it is shared.
  link       Print a share link (kadshare:file?id=...) for a file id, name or local
             PATH: `kadshare get LINK` fetches it from anywhere, joining the network
             through the peers named in it when the node is not in it yet.
  peers      The node's routing table.
  status     The node's id, ports and counts.

Options:
  --node URL         REST address of a kadshare node, http://HOST:PORT or HOST:PORT;
                     default: $KADSHARE_NODE, else http://127.0.0.1:8000.
  --json             Print one JSON document (for scripts) instead of tables.
  -o PATH, --output PATH  Folder to save into, or the file's own path [default: .].
                     PATH is a folder if it exists as one, ends with /, or is new and
                     has no extension (it is created); else it is the file's path.
  --sources N        Download from up to N providers at once [default: 4].
  --from ADDR        Fetch from this provider (HOST:GRPC_PORT) instead of asking the
                     node who provides the file; repeatable. FILE must be an id
                     (a prefix is expanded by the node).
  --force            Replace an existing different file with the same name.
  --timeout S        Seconds without data before a source is dropped [default: 15].
  --max-rate RATE    Cap the download rate, e.g. 512K or 20M (bytes/s, K/M = 1024-based,
                     all sources together); default: no cap.
  --to ADDR          gRPC address (HOST:PORT) of the peer receiving the upload.
  --name NAME        Name to give the uploaded file (default: its own name).
  --token TOKEN      The receiving node's token (its DATA/token); default:
                     $KADSHARE_TOKEN. Needed unless it runs --accept-uploads open.
  -v, --verbose      Log what happens to stderr.
  -h, --help         Show this help.

FILE_ID is a file's 64-hex id or any unique prefix of at least 8 characters (tables
show 12); the node expands it against the ids it has seen (search, providers, its own
files). FILE is a FILE_ID, a file's name or a share link (kadshare:file?...).
TARGET is a FILE or the path of a local file (hashed here).
`kadshare COMMAND --help` shows one command.

Transfers use TLS and check each provider's node identity (plaintext only when the
node's status says it runs --insecure-transfers). In a closed network set
KADSHARE_NETWORK_KEY to the network key file, as for kadshare-node.

Exit codes: 0 ok, 1 not found or failed, 2 bad usage, 130 interrupted (resume state kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from docopt import DocoptExit, docopt

from kadcommon.addr import format_hostport
from kadcommon.fileid import is_file_id, is_id_prefix
from kadcommon.link import Link, LinkError, format_link, is_link, parse_link
from kadcommon.merkle import hash_file
from kadcommon.units import human_size
from pclient.cliargs import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    address,
    node_url,
    positive_float,
    positive_int,
    rate,
)
from pclient.errors import (
    AmbiguousId,
    AmbiguousName,
    BadFileId,
    ClientError,
    NoProviders,
    NotFound,
)
from pclient.render import print_json, short_id
from pclient.usage import Usage

if TYPE_CHECKING:
    from pathlib import Path

    from pclient.client import Client
    from pclient.download import DownloadConfig, DownloadResult

# httpx, grpc and rich (0.4 s of start-up on a loaded 2-core machine) are imported by the
# commands that use them: `kadshare get --from ID` never loads httpx, nor rich off a terminal.

log = logging.getLogger(__name__)

VERSION = "kadshare 0.1.0"


async def _run(args: dict[str, Any]) -> int:
    given = args["--node"] or os.environ.get("KADSHARE_NODE")
    node = node_url(given) if given else None
    as_json = bool(args["--json"])
    if args["put"]:
        from pclient.cliput import put_command

        return await put_command(args, as_json)
    if args["id"]:
        return _file_id(args["PATH"], as_json)
    if args["get"] and args["--from"] and is_file_id(args["FILE"]):
        return await _get(None, args, as_json)  # no node needed
    from pclient.client import DEFAULT_NODE_URL, Client
    from pclient.render import files_table, peers_table, providers_table, search_table, status_table

    # with the node's token, downloads swarm: the node serves the chunks fetched so far
    async with Client(node or DEFAULT_NODE_URL,
                      token=os.environ.get("KADSHARE_TOKEN") or None) as client:
        if args["search"]:
            query = " ".join(args["WORDS"])
            results = await client.search(query)
            if as_json:
                print_json({"query": query, "results": results})
            else:
                search_table(results)
            return EXIT_OK if results else EXIT_FAILED
        if args["providers"]:
            file_id, provs = await client.find_providers(args["FILE_ID"])
            if as_json:
                print_json({"file_id": file_id, "providers": provs})
            else:
                providers_table(file_id, provs)
            return EXIT_OK if provs else EXIT_FAILED
        if args["ls"]:
            files = await client.files()
            print_json({"files": files}) if as_json else files_table(files)
            return EXIT_OK
        if args["peers"]:
            peers = await client.peers()
            print_json({"peers": peers}) if as_json else peers_table(peers)
            return EXIT_OK
        if args["status"]:
            status = await client.status()
            print_json(status) if as_json else status_table(status, client.node_url)
            return EXIT_OK
        if args["get"]:
            return await _get(client, args, as_json)
        if args["link"]:
            return await _link(client, args["TARGET"], as_json)
    raise UsageError("unknown command")


async def _link(client: Client, target: str, as_json: bool) -> int:
    """``kadshare link``: a local file is hashed here, anything else resolved by the node."""
    if await asyncio.to_thread(os.path.isfile, target):
        try:
            file_id, _leaves, st = await asyncio.to_thread(hash_file, target)
        except OSError as exc:
            return _fail(f"cannot read {target}: {(exc.strerror or str(exc)).lower()}",
                         as_json, EXIT_FAILED)
        link = await client.link_for(file_id, name=os.path.basename(target), size=st.st_size)
    else:
        link = await client.link_for((await client.resolve(target))["file_id"])
    text = format_link(link)
    if as_json:
        print_json({"link": text, "file_id": link.file_id, "name": link.name,
                    "size": link.size, "kind": link.kind,
                    "peers": [format_hostport(h, p) for h, p in link.peers]})
    else:
        print(text)
    return EXIT_OK


async def _from_link(client: Client, text: str) -> tuple[Link, list[str]]:
    """The link and its providers' gRPC addresses; the node joins through the link's
    peers when it knows nobody or finds no provider."""
    try:
        link = parse_link(text)
    except LinkError as exc:
        raise UsageError(str(exc)) from None
    found: list[dict[str, Any]] = []
    if (await client.status()).get("peers"):
        with contextlib.suppress(ClientError):
            found = await client.providers(link.file_id)
    if not found:
        log.info("joining through the link's %d peer(s)", len(link.peers))
        if not await client.bootstrap(link):
            raise NoProviders("could not join the network through the link's peer(s) "
                              + ", ".join(format_hostport(h, p) for h, p in link.peers))
        found = await client.providers(link.file_id)
    grpc = [str(p["grpc"]) for p in found if isinstance(p, dict) and p.get("grpc")]
    if not grpc:
        raise NoProviders(f"nobody provides {link.name} ({link.file_id[:16]}…) right now")
    return link, grpc


async def _get(client: Client | None, args: dict[str, Any], as_json: bool) -> int:
    sources = positive_int(args["--sources"], "--sources")
    timeout = positive_float(args["--timeout"], "--timeout")
    direct = [address(a, "--from") for a in args["--from"]]
    target = args["FILE"]
    from pclient.download import DownloadConfig, download_file
    from pclient.render import ProgressBar

    config = DownloadConfig(sources=sources, stall_timeout=timeout, force=bool(args["--force"]),
                            max_rate=rate(args["--max-rate"], "--max-rate"))
    if is_link(target):
        assert client is not None  # _run gives one unless FILE is a full id with --from
        link, providers = await _from_link(client, target)
        if link.kind == "folder":
            return await _get_folder(client, link.file_id, args, config, as_json)
        bar = ProgressBar(link.name, enabled=None if not as_json else False)
        with bar:  # providers looked up again by the joined node: each identity checked
            result = await client.download(link.file_id, args["--output"], config=config,
                                           progress=bar.download, name=link.name,
                                           providers=direct or None)
        return _report(result, as_json)
    if direct:
        if is_file_id(target):
            hit: dict[str, Any] = {"file_id": target.lower(), "name": ""}
        elif client is not None and is_id_prefix(target):  # the node expands it; bytes: --from
            hit = {"file_id": (await client.find_providers(target))[0], "name": ""}
        else:
            raise UsageError("with --from, FILE must be a file id (64 hex characters, or a "
                             "unique prefix of at least 8)")
    else:
        assert client is not None  # _run gives one unless FILE is a full id with --from
        hit = await client.resolve(target)
    # the name the user asked for, when it is a file's name; else the providers' majority
    announced = str(hit.get("name") or "")
    if client is not None and not direct:
        from kadcommon.manifest import SUFFIX  # (cryptography: loaded only here)

        names = [announced]
        if not announced.endswith(SUFFIX):  # an id: what do its providers call it?
            found = [p for p in await client.providers(hit["file_id"]) if isinstance(p, dict)]
            names = [p["name"] for p in found if isinstance(p.get("name"), str)]
        if names and all(n.endswith(SUFFIX) for n in names):
            return await _get_folder(client, hit["file_id"], args, config, as_json)
    name = target if target in (announced, announced.rsplit("/", 1)[-1]) else None
    bar = ProgressBar(name or short_id(hit["file_id"]), enabled=None if not as_json
                      else False)
    with bar:
        if direct:
            result = await download_file(hit["file_id"], args["--output"], direct,
                                         config=config, progress=bar.download)
        else:
            assert client is not None
            result = await client.download(hit["file_id"], args["--output"], config=config,
                                           progress=bar.download, name=name)
    return _report(result, as_json)


async def _get_folder(client: Client, folder_id: str, args: dict[str, Any],
                      config: DownloadConfig, as_json: bool) -> int:
    """A folder id: its manifest, then every file, under one progress bar."""
    from pclient.download import ProgressCallback
    from pclient.folders import get_folder
    from pclient.render import ProgressBar

    async def fetch(file_id: str, dest: Path, name: str,
                    progress: ProgressCallback | None) -> DownloadResult:
        return await client.download(file_id, dest, config=config, progress=progress,
                                     name=name)

    bar = ProgressBar(short_id(folder_id), enabled=None if not as_json else False)
    with bar:
        result = await get_folder(folder_id, args["--output"], fetch, progress=bar.download)
    if as_json:
        print_json(result.to_json())
    else:
        print(f"saved {result.path}/ ({result.files} files, {human_size(result.size)}, "
              f"every file verified, {result.already_present} already here)")
    return EXIT_OK


def _report(result: DownloadResult, as_json: bool) -> int:
    if as_json:
        print_json(result.to_json())
        return EXIT_OK
    if result.already_present:
        print(f"{result.path} is already here and verified ({human_size(result.size)})")
        return EXIT_OK
    print(_saved_line(result))
    for source, reason in result.dropped.items():
        print(f"  dropped {source}: {reason}")
    return EXIT_OK


def _saved_line(result: DownloadResult) -> str:
    """What a finished download says; no rate or source count when nothing was fetched."""
    size = human_size(result.size)
    if result.size == 0:
        return f"saved {result.path} (an empty file: nothing to fetch)"
    if result.fetched_bytes == 0:
        return f"saved {result.path} ({size}, every chunk verified, all of it resumed)"
    rate = result.fetched_bytes / result.seconds / 1e6 if result.seconds > 0 else 0.0
    resumed = f", {human_size(result.resumed_bytes)} resumed" if result.resumed_bytes else ""
    count = len(result.sources)
    return (f"saved {result.path} ({size}, every chunk verified{resumed}) from {count} "
            f"source{'s' if count != 1 else ''} in {result.seconds:.1f} s, {rate:.1f} MB/s")


def _file_id(path: str, as_json: bool) -> int:
    """``kadshare id PATH``: hash the file locally (Merkle id, kadcommon.merkle)."""
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "is not a file"
        if not os.path.lexists(path):
            what = "does not exist"
        return _fail(f"{path} {what}", as_json, EXIT_FAILED)
    try:
        file_id, _leaves, st = hash_file(path)
    except OSError as exc:
        return _fail(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}",
                     as_json, EXIT_FAILED)
    if as_json:
        print_json({"file_id": file_id, "path": path, "size": st.st_size})
    else:
        print(f"{file_id}  {path}")
    return EXIT_OK


def _fail(message: str, as_json: bool, code: int, extra: dict[str, Any] | None = None) -> int:
    print(f"kadshare: {message}", file=sys.stderr)
    if as_json:
        print_json({"error": message, "exit_code": code, **(extra or {})})
    return code


def run() -> None:
    """Entry point of the ``kadshare`` console script and ``python -m pclient.cli``:
    ``main()``, then exit without the interpreter's teardown.

    Every file a command writes is closed (and its threads joined) before ``main``
    returns, so the teardown only frees memory and stops grpc's threads: 0.03-0.1 s of
    a command's wall time on a loaded 2-core machine, skipped by ``os._exit`` once the
    output is flushed."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone away (closed pipe): nothing to tell
            code = code or EXIT_FAILED
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The ``kadshare`` command (console script: ``run``); returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (e.g. `kadshare search x | head -1`): stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = Usage(__doc__ or "", "kadshare")
    if argv == ["--version"]:
        print(VERSION)
        return EXIT_OK
    if "-h" in argv or "--help" in argv:
        command = usage.command_of(argv)
        print(usage.help(command) if command else (__doc__ or "").strip())
        return EXIT_OK
    try:
        args = docopt(__doc__, argv=argv, default_help=False)
    except DocoptExit as exc:
        text = str(exc)
        if DocoptExit.usage and text.endswith(DocoptExit.usage):
            text = text[: -len(DocoptExit.usage)]
        print(usage.error(argv, text), file=sys.stderr)
        return EXIT_USAGE
    as_json = bool(args["--json"])
    logging.basicConfig(
        level=logging.INFO if args["--verbose"] else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        msg = "interrupted"
        if args["get"]:
            msg += "; progress is saved, run the same command again to resume"
        return _fail(msg, as_json, EXIT_INTERRUPTED)
    except (UsageError, BadFileId) as exc:
        return _fail(str(exc), as_json, EXIT_USAGE)
    except AmbiguousName as exc:
        if not as_json:
            from pclient.render import search_table

            print(f"kadshare: {exc}", file=sys.stderr)
            search_table(exc.candidates, out=sys.stderr)
            return EXIT_FAILED
        return _fail(str(exc), as_json, EXIT_FAILED, {"candidates": exc.candidates})
    except AmbiguousId as exc:
        if not as_json:
            print(f"kadshare: {_ambiguous_head(exc)}", file=sys.stderr)
            for cand in exc.candidates:
                print(f"  {cand.get('file_id')}  {cand.get('name', '')}".rstrip(),
                      file=sys.stderr)
            return EXIT_FAILED
        return _fail(_ambiguous_head(exc), as_json, EXIT_FAILED, {"candidates": exc.candidates})
    except NotFound as exc:
        return _fail(str(exc), as_json, EXIT_FAILED)
    except ClientError as exc:
        log.debug("failure", exc_info=True)
        return _fail(str(exc), as_json, EXIT_FAILED)
    except Exception as exc:  # a bug or an unforeseen failure: one line, details with -v
        log.info("unexpected failure", exc_info=True)
        return _fail(f"unexpected error: {type(exc).__name__}: {exc} (run with -v for details)",
                     as_json, EXIT_FAILED)


def _ambiguous_head(exc: AmbiguousId) -> str:
    return (f"{len(exc.candidates)} files have ids starting with that prefix; "
            "give more characters or one of these ids:")


if __name__ == "__main__":  # python -m pclient.cli
    run()
