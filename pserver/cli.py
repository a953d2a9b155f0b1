"""kadshare-node: run one kadshare peer (DHT + gRPC transfers + REST) until SIGINT/SIGTERM.

Usage:
  kadshare-node [options] [--bootstrap HOST:PORT]...
  kadshare-node -h | --help
  kadshare-node --version
  kadshare-node --gen-network-key FILE

Options:
  --share DIR            Folder to share, subfolders included (default: share nothing).
  --data DIR             Data folder: identity, contacts, hash cache, token, node.json
                         (default: ~/.kadshare).
  --host ADDR            Address to listen on and to advertise (default: 127.0.0.1).
  --dht-port N           UDP port of the DHT; 0 = any free port (default: 8468).
  --grpc-port N          TCP port of the gRPC TransferService; 0 = any (default: 50051).
  --rest-port N          TCP port of the REST API; 0 = any (default: 8000).
  --rest-host ADDR       Address the REST API listens on (default: 127.0.0.1). REST reads
                         need no token: open it to a network only on purpose.
  --bootstrap HOST:PORT  DHT address of a peer to join through; repeatable. None: rejoin
                         through the contacts saved in the data folder, else start a new
                         network.
  --accept-uploads MODE  Accept gRPC uploads into the share folder. Bare flag (MODE
                         "token"): only clients sending the node's token (DATA/token)
                         may upload; "open": anyone who reaches the gRPC port may.
  --max-upload BYTES     Largest upload accepted, e.g. 500M or 2G (default: 1G).
  --max-upload-rate RATE Cap what this peer sends to downloaders, all streams together,
                         e.g. 20M or 512K (bytes/s, 1024-based; default: no cap).
  --max-upload-slots N[/M]  Download streams served at once: N in total, M per client
                         address (default: 256, no per-client cap). A client over the cap
                         gets RESOURCE_EXHAUSTED with a retry hint.
  --scan-interval SECS   Seconds between scans of the share folder (default: 2).
  --settle SECS          Seconds a new or changed file must stay unchanged before it is
                         hashed and announced (default: 3).
  --network-key FILE     Join the closed network of this key file (one line of 64 hex
                         characters): DHT datagrams and gRPC calls without it are
                         refused. Default: the public network.
  --gen-network-key FILE Write a new random network key to FILE (mode 0600) and exit.
  --insecure-transfers   Serve gRPC in plaintext, without TLS (experiments only; clients
                         learn it from this node's REST status).
  --log-level LEVEL      debug, info, warning or error (default: info).
  -h --help              Show this help.
  --version              Show the version.

Every option can also come from an environment variable: KADSHARE_SHARE, KADSHARE_DATA,
KADSHARE_HOST, KADSHARE_DHT_PORT, KADSHARE_GRPC_PORT, KADSHARE_REST_PORT,
KADSHARE_REST_HOST, KADSHARE_BOOTSTRAP (comma-separated), KADSHARE_ACCEPT_UPLOADS
(1/true/yes/token or open),
KADSHARE_MAX_UPLOAD, KADSHARE_MAX_UPLOAD_RATE, KADSHARE_MAX_UPLOAD_SLOTS,
KADSHARE_SCAN_INTERVAL, KADSHARE_SETTLE, KADSHARE_NETWORK_KEY, KADSHARE_INSECURE_TRANSFERS
(1/true/yes), KADSHARE_LOG_LEVEL. Flags win.

Once the three listeners are up, one JSON line {"node_id", "host", "dht_port",
"grpc_port", "rest_port", "transfers" (tls or plaintext), "network" (public or the key's
fingerprint)} is printed on stdout and written to DATA/node.json.
Exit codes: 0 stopped by a signal, 1 failed while running, 2 bad usage or folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from docopt import DocoptExit, docopt

from kadcommon.addr import AddressError, parse_hostport
from kadcommon.netkey import NetworkKeyError, generate_key_file, load_key
from kadcommon.units import parse_rate
from pserver import __version__
from pserver.config import (
    DEFAULT_MAX_CONCURRENT_DOWNLOADS,
    DEFAULT_MAX_UPLOAD,
    DEFAULT_SCAN_INTERVAL,
    DEFAULT_SETTLE_SECONDS,
    NodeConfig,
)
from pserver.errors import ConfigError
from pserver.sdnotify import notify

log = logging.getLogger(__name__)

PROG = "kadshare-node"
DEFAULTS = {
    "--data": str(Path("~/.kadshare")),
    "--host": "127.0.0.1",
    "--dht-port": "8468",
    "--grpc-port": "50051",
    "--rest-port": "8000",
    "--rest-host": "127.0.0.1",
    "--max-upload": str(DEFAULT_MAX_UPLOAD),
    "--scan-interval": str(DEFAULT_SCAN_INTERVAL),
    "--settle": str(DEFAULT_SETTLE_SECONDS),
    "--log-level": "info",
}
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)i?b?", re.IGNORECASE)


class UsageError(Exception):
    """A flag or environment value that cannot be used (exit 2)."""


class FolderError(UsageError):
    """A share/data folder layout that is refused (exit 2, one line, no usage block)."""


def _env_name(flag: str) -> str:
    return "KADSHARE_" + flag.lstrip("-").replace("-", "_").upper()


def _pick(args: Mapping[str, object], env: Mapping[str, str], flag: str) -> str | None:
    value = args.get(flag)
    if value not in (None, False, []):
        return str(value)
    from_env = env.get(_env_name(flag), "").strip()
    if from_env:
        return from_env
    return DEFAULTS.get(flag)


def _port(flag: str, value: str | None) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise UsageError(f"{flag} must be a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"{flag} must be 0..65535, got {port}")
    return port


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); raise UsageError."""
    try:
        return parse_hostport(text.strip())
    except AddressError as exc:
        raise UsageError(f"--bootstrap: {exc}") from None


def _rate(text: str | None) -> int:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise UsageError(f"--max-upload-rate: {exc}") from None


def _slots(text: str | None) -> dict[str, int]:
    """``N`` or ``N/M`` -> NodeConfig fields (total, per client)."""
    if text is None:
        return {}
    total, _, per_client = text.strip().partition("/")
    try:
        values = {"max_concurrent_downloads": int(total)}
        if per_client:
            values["max_downloads_per_client"] = int(per_client)
    except ValueError:
        raise UsageError(f"--max-upload-slots wants N or N/M (numbers), got {text!r}") from None
    if min(values.values()) < 1:
        raise UsageError(f"--max-upload-slots wants numbers >= 1, got {text!r}")
    return values


def parse_size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"--max-upload wants a byte count like 500M, got {text!r}")
    power = " kmgt".index((match.group(2) or " ").lower())
    return int(match.group(1)) * 1024**power


UPLOAD_MODES = {"token": "token", "open": "open", "1": "token", "true": "token",
                "yes": "token", "on": "token", "0": "off", "false": "off", "no": "off",
                "off": "off", "": "off"}


def upload_mode(args: Mapping[str, object], env: Mapping[str, str]) -> str:
    """``--accept-uploads [token|open]`` or KADSHARE_ACCEPT_UPLOADS -> off, token or open."""
    flag = args.get("--accept-uploads")
    if flag not in (None, False):
        mode = str(flag).strip().lower()
        if mode not in ("token", "open"):
            raise UsageError(f"--accept-uploads takes no value or 'open', got {flag!r}")
        return mode
    text = env.get("KADSHARE_ACCEPT_UPLOADS", "").strip().lower()
    if text not in UPLOAD_MODES:
        raise UsageError(f"KADSHARE_ACCEPT_UPLOADS must be 1/0/true/false/open, got {text!r}")
    return UPLOAD_MODES[text]


def _flag(args: Mapping[str, object], env: Mapping[str, str], flag: str) -> bool:
    if args.get(flag):
        return True
    return env.get(_env_name(flag), "").strip().lower() in ("1", "true", "yes")


def _network_key(path: str | None) -> bytes:
    if not path:
        return b""
    try:
        return load_key(Path(path).expanduser())
    except NetworkKeyError as exc:
        raise UsageError(str(exc)) from None


def normalise_argv(argv: list[str]) -> list[str]:
    """Give a bare ``--accept-uploads`` its default mode, since docopt has no optional
    option values: ``--accept-uploads`` alone means ``--accept-uploads=token``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if arg == "--accept-uploads" and following.lower() not in ("open", "token"):
            out.append("--accept-uploads=token")
        else:
            out.append(arg)
    return out


def build_config(args: Mapping[str, object], env: Mapping[str, str]) -> tuple[NodeConfig, int]:
    """Flags, then ``KADSHARE_*`` variables, then defaults -> (config, log level)."""
    share = _pick(args, env, "--share")
    data = _pick(args, env, "--data")
    assert data is not None
    bootstrap_texts = list(args.get("--bootstrap") or [])  # type: ignore[call-overload]  # docopt's dict values are untyped
    if not bootstrap_texts and env.get("KADSHARE_BOOTSTRAP", "").strip():
        bootstrap_texts = [t for t in re.split(r"[,\s]+", env["KADSHARE_BOOTSTRAP"]) if t]
    uploads = upload_mode(args, env)
    level_text = str(_pick(args, env, "--log-level")).lower()
    if level_text not in LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(LEVELS)}, got {level_text!r}")
    try:
        interval = float(str(_pick(args, env, "--scan-interval")))
    except ValueError:
        raise UsageError("--scan-interval must be a number of seconds") from None
    if not 0.05 <= interval <= 86400:
        raise UsageError("--scan-interval must be between 0.05 and 86400 seconds")
    try:
        settle = float(str(_pick(args, env, "--settle")))
    except ValueError:
        raise UsageError("--settle must be a number of seconds") from None
    if not 0 <= settle <= 3600:
        raise UsageError("--settle must be between 0 and 3600 seconds")
    host = str(_pick(args, env, "--host"))
    if not host or any(c.isspace() for c in host):
        raise UsageError(f"--host wants an address, got {host!r}")
    rest_host = str(_pick(args, env, "--rest-host"))
    if not rest_host or any(c.isspace() for c in rest_host):
        raise UsageError(f"--rest-host wants an address, got {rest_host!r}")
    slots = _slots(_pick(args, env, "--max-upload-slots"))
    config = NodeConfig(
        share_dir=Path(share).expanduser().absolute() if share else None,
        data_dir=Path(data).expanduser().absolute(),
        host=host,
        dht_port=_port("--dht-port", _pick(args, env, "--dht-port")),
        grpc_port=_port("--grpc-port", _pick(args, env, "--grpc-port")),
        rest_port=_port("--rest-port", _pick(args, env, "--rest-port")),
        bootstrap=tuple(parse_address(t) for t in bootstrap_texts),
        accept_uploads=uploads != "off",
        open_uploads=uploads == "open",
        rest_host=rest_host,
        max_upload=parse_size(str(_pick(args, env, "--max-upload"))),
        max_upload_rate=_rate(_pick(args, env, "--max-upload-rate")),
        max_concurrent_downloads=slots.get(
            "max_concurrent_downloads", DEFAULT_MAX_CONCURRENT_DOWNLOADS),
        max_downloads_per_client=slots.get("max_downloads_per_client", 0),
        scan_interval=interval,
        settle_seconds=settle,
        insecure_transfers=_flag(args, env, "--insecure-transfers"),
        network_key=_network_key(_pick(args, env, "--network-key")),
    )
    try:
        config.check_folders()
    except ValueError as exc:
        raise FolderError(str(exc)) from None
    try:
        config.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return config, LEVELS[level_text]


class OneLineFormatter(logging.Formatter):
    """One line per event, a traceback folded into the same line."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\n", " | ")

    def formatException(self, ei) -> str:  # noqa: N802 (logging's name)
        lines = traceback.format_exception(*ei)
        return " | ".join(line.strip() for chunk in lines for line in chunk.splitlines())


def configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("sanic", "kademlia", "rpcudp", "grpc"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _usage() -> str:
    """The "Usage:" block of the docstring."""
    doc = __doc__ or ""
    start = doc.index("Usage:")
    return doc[start : doc.index("\n\n", start)]


def _known_options() -> list[str]:
    """Every long and short option the usage text documents."""
    return re.findall(r"(?m)^\s+((?:--?[\w-]+)(?:[ ,]+--?[\w-]+)*)", __doc__ or "")


def _what_is_wrong(words: Sequence[str]) -> str:
    """Name the first word docopt could not place (an unknown option, a stray word)."""
    known = {name for group in _known_options() for name in re.findall(r"--?[\w-]+", group)}
    for word in words:
        if word == "--":
            break
        name = word.split("=", 1)[0]
        if name.startswith("--"):
            matches = [k for k in known if k.startswith(name)]
            if not matches:
                return f"unknown option {name}"
            if len(matches) > 1 and name not in known:
                return f"ambiguous option {name} (could be {', '.join(sorted(matches))})"
        elif name.startswith("-") and name not in known:
            return f"unknown option {name}"
    return "an option is missing its value or a word is out of place"


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return code


async def run(config: NodeConfig) -> int:
    """Start the node, print the JSON line, wait for a signal, stop gracefully."""
    from dht.errors import DhtError
    from pserver.node import Node

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(Node.start(config))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # a signal during the start: undo what started, exit 0
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        return 0
    stopping.cancel()
    try:
        node = starting.result()
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except (OSError, DhtError) as exc:
        return _fail(f"cannot start: {exc}", 1)
    try:
        sys.stdout.write(json.dumps(node.info) + "\n")
        sys.stdout.flush()
    except OSError:
        log.warning("stdout is closed; the JSON line is in %s", config.data_dir / "node.json")
    notify(f"READY=1\nSTATUS=serving: dht {node.info['dht_port']}, grpc {node.info['grpc_port']}")
    await stop.wait()
    log.info("signal received: leaving the network")
    notify("STOPPING=1\nSTATUS=leaving the network")
    await node.stop(graceful=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; returns the exit code."""
    try:
        words = list(argv) if argv is not None else sys.argv[1:]
        args = docopt(__doc__, argv=normalise_argv(words), version=f"{PROG} {__version__}")
    except DocoptExit:
        print(f"{PROG}: {_what_is_wrong(words)}\n{_usage()}\nSee {PROG} --help.",
              file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version print, then exit 0
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 2
    except BrokenPipeError:  # `kadshare-node --help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if args.get("--gen-network-key"):
        try:
            generate_key_file(Path(str(args["--gen-network-key"])).expanduser())
        except (NetworkKeyError, OSError) as exc:
            return _fail(str(exc), 2)
        print(f"wrote a new network key to {args['--gen-network-key']}; give it to "
              "every member (--network-key FILE), and to no one else")
        return 0
    try:
        config, level = build_config(args, os.environ)
    except FolderError as exc:
        return _fail(str(exc), 2)
    except UsageError as exc:
        return _fail(f"{exc}\n{_usage()}\nSee {PROG} --help.", 2)
    configure_logging(level)
    try:
        return asyncio.run(run(config))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        log.exception("node failed")
        return _fail(f"failed: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
