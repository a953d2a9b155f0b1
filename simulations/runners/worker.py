"""A simulated node in its own process: ``python -m simulations.runners.worker PARAMS``.

The process and netns runners start one worker per kademlia or tracker node (kadshare
nodes run as the real ``kadshare-node``). The worker builds the impl's node, installs
the same seeded NetModel as inproc (so --latency/--loss apply) and obeys JSON lines on
stdin: ``{"id", "cmd", ...}`` with cmd start | announce | lookup | leave | reset |
stats; each answer is one JSON line ``{"id", "ok", "result"|"error", "msgs", "bytes",
"records", "maint"}`` on stdout. End of stdin or a broken line ends the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

from simulations.impls import node_class
from simulations.netmodel import NetModel, op_counter, traffic_tag
from simulations.scenarios import FileSpec

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20


class _Worker:
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.net = NetModel(seed=int(params.get("seed", 0)),
                            latency=tuple(params.get("latency", (0.0, 0.0))),
                            loss=float(params.get("loss", 0.0)))
        cls = node_class(str(params["impl"]))
        self.node = cls(int(params["idx"]), str(params["host"]), dict(params.get("node", {})))
        self.out = sys.stdout
        self.tasks: set[asyncio.Task[None]] = set()

    def reply(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            msg["records"] = self.node.records()
        msg["maint"] = self.net.traffic.bytes.get("maintenance", 0)
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()

    async def handle(self, req: dict[str, Any]) -> None:
        rid, cmd = req.get("id"), req.get("cmd")
        ctr = [0, 0]
        op_counter.set(ctr)
        try:
            result: Any = None
            if cmd == "start":
                await self.node.start([tuple(a) for a in req.get("bootstrap", [])])
                result = {"addr": list(self.node.addr or ()), "key": self.node.provider_key}
            elif cmd in ("announce", "lookup"):
                f = FileSpec(**req["file"])
                traffic_tag.set(cmd)
                if cmd == "announce":
                    await self.node.announce(f)
                else:
                    result = await self.node.lookup(f)
            elif cmd == "leave":
                await self.node.leave()
            elif cmd == "reset":
                self.net.traffic.bytes.clear()
                self.net.traffic.msgs.clear()
            elif cmd == "stats":
                result = self.net.traffic.snapshot()
            else:
                raise ValueError(f"unknown command {cmd!r}")
            self.reply({"id": rid, "ok": True, "result": result, "msgs": ctr[0],
                        "bytes": ctr[1]})
        except Exception as exc:   # reported to the harness, which counts it
            self.reply({"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                        "msgs": ctr[0], "bytes": ctr[1]})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.net.install(loop)
        reader = asyncio.StreamReader(limit=MAX_LINE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.reply({"id": 0, "ok": True, "result": "ready"})
        for _ in range(100_000_000):   # bounded; ends on EOF
            line = await reader.readline()
            if not line:
                break
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError:
                log.error("worker: dropping malformed command line")
                continue
            task = asyncio.create_task(self.handle(req))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        with contextlib.suppress(Exception):
            self.node.crash()


def main() -> int:
    """Run one worker until stdin closes."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    for name in ("kademlia", "rpcudp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        params = json.loads(sys.argv[1])
    except (IndexError, ValueError):
        print("usage: python -m simulations.runners.worker '<json params>'", file=sys.stderr)
        return 2
    asyncio.run(_Worker(params).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
