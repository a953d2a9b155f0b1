"""The clock seam (issue 11): every DHT time read follows the event loop, every random
choice follows the injected generator, and no dht module reads time or randomness
behind the seam's back."""

from __future__ import annotations

import ast
import asyncio
import random
import time
from pathlib import Path

from dht import DhtConfig, DhtNode, clock
from dht.identity import Identity
from dht.keys import file_key

from .netutil import file_id_of

OFFSET = 10_000.0
WALL_BASE = 2_000_000_000.0  # May 2033: far from today's time.time()


class OffsetLoop(asyncio.SelectorEventLoop):
    """A real loop whose clocks run 10,000 s ahead of the machine's, and that refuses
    threads: a DHT that read time.monotonic()/time.time(), or resolved an IP literal
    in the executor, would show it."""

    def time(self) -> float:
        return super().time() + OFFSET

    def wall_time(self) -> float:
        return WALL_BASE + (self.time() - OFFSET)

    def run_in_executor(self, executor, func, *args):  # type: ignore[override]
        raise AssertionError(f"executor thread used for {func!r}")


def run(coro_fn, loop_cls=OffsetLoop):
    loop = loop_cls()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), timeout=30))
    finally:
        loop.close()


def test_every_dht_timestamp_follows_the_loop() -> None:
    async def scenario() -> dict:
        loop = asyncio.get_running_loop()
        config = DhtConfig.for_tests()
        a, b = DhtNode(config=config), DhtNode(config=config)
        await a.listen(0, "127.0.0.1")
        await b.listen(0, "127.0.0.1")
        try:
            assert await b.bootstrap([("127.0.0.1", a.port)]) >= 1  # IP literal: no thread
            fid = file_id_of("seam")
            await b.announce(fid, "seam test.txt", 5, "127.0.0.1:1")
            assert a.protocol is not None and b.protocol is not None
            issued = [r.issued_at for r in await b.find_providers(fid)]
            b.protocol.suspect(a.identity.node_id)
            return dict(
                loop_now=loop.time(),
                wall_now=loop.wall_time(),
                issued=issued,
                stored_at=[e.stored_at for e in a.store._data[file_key(fid)].values()],
                buckets=[bk.last_updated for n in (a, b) for bk in n.protocol.router.buckets],
                srtt=b.protocol.rtt._global,
                suspect_until=b.protocol._suspects[a.identity.node_id],
                probe_refill=a.protocol._probe_refill,
                lonely=len(b.protocol.router.lonely_buckets()),
            )
        finally:
            a.stop()
            b.stop()

    seen = run(scenario)
    loop_now, wall_now = seen["loop_now"], seen["wall_now"]
    # records: issued_at and storage times are the loop's wall clock, not time.time()
    assert seen["issued"] and all(wall_now - 60 < t <= wall_now for t in seen["issued"])
    assert seen["stored_at"] and all(wall_now - 60 < t <= wall_now for t in seen["stored_at"])
    # buckets (including the upstream KBucket timestamps) and deadlines: the loop's time
    assert all(loop_now - 60 < t <= loop_now for t in seen["buckets"])
    assert seen["lonely"] == 0
    assert loop_now < seen["suspect_until"] <= loop_now + DhtConfig.for_tests().rpc_timeout_max
    assert loop_now - 60 < seen["probe_refill"] <= loop_now
    # an RTT sample is a difference of two loop times: a mix would be ~10,000 s
    assert seen["srtt"] is not None and seen["srtt"][0] < 5.0
    # the machine's own clocks were not used
    assert abs(time.monotonic() - loop_now) > OFFSET / 2
    assert abs(time.time() - wall_now) > 3600


def _seeded_draws(seed: int | None) -> dict:
    """Identity, message ids, refresh ids and jitter of one node under ``seed``."""

    async def scenario() -> dict:
        node = DhtNode(config=DhtConfig.for_tests())
        await node.listen(0, "127.0.0.1")
        try:
            assert node.protocol is not None
            futures = [node.protocol.request(("127.0.0.1", 9), "ping", [b"x"])[0]
                       for _ in range(3)]
            msg_ids = list(node.protocol._pending)
            for f in futures:
                f.cancel()
            node.protocol.router.buckets[0].last_updated -= 10_000  # make it lonely
            return dict(node_id=node.node_id, msg_ids=msg_ids,
                        refresh=node.protocol.get_refresh_ids(), jitter=clock.rng().random())
        finally:
            node.stop()

    async def seeded() -> dict:
        if seed is None:
            return await scenario()
        with clock.use_rng(random.Random(seed)):
            return await scenario()

    return run(seeded, asyncio.SelectorEventLoop)


def test_a_seeded_rng_repeats_identities_message_ids_and_refresh_targets() -> None:
    first, second, other = _seeded_draws(7), _seeded_draws(7), _seeded_draws(8)
    assert first == second
    assert first["node_id"] != other["node_id"] and first["msg_ids"] != other["msg_ids"]
    assert len(set(first["msg_ids"])) == 3 and len(first["refresh"]) == 1


def test_without_a_seeded_rng_identities_and_message_ids_are_fresh() -> None:
    first, second = _seeded_draws(None), _seeded_draws(None)
    assert first["node_id"] != second["node_id"]
    assert first["msg_ids"] != second["msg_ids"]
    assert clock.seeded_rng() is None


def test_identity_from_a_seeded_generator_signs_and_verifies() -> None:
    a = Identity.generate(random.Random(3))
    assert a.node_id == Identity.generate(random.Random(3)).node_id
    assert a.node_id != Identity.generate().node_id


FORBIDDEN = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"),
             ("os", "urandom")}


def test_no_dht_module_reads_time_or_randomness_behind_the_seam() -> None:
    """Only dht/clock.py may call time.time()/time.monotonic()/os.urandom or random.*."""
    root = Path(__file__).resolve().parents[2] / "dht"
    offenders = []
    for path in sorted(root.glob("*.py")):
        if path.name == "clock.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("time", "random", "secrets"):
                offenders.append(f"{path.name}:{node.lineno} from {node.module} import")
            if isinstance(node, ast.Import) and any(
                    a.name in ("time", "secrets") for a in node.names):
                offenders.append(f"{path.name}:{node.lineno} import time/secrets")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name):
                owner, name = node.func.value.id, node.func.attr
                if (owner, name) in FORBIDDEN or (owner == "random" and name != "Random"):
                    offenders.append(f"{path.name}:{node.lineno} {owner}.{name}()")
    assert offenders == []


def test_clock_outside_a_loop_falls_back_to_the_machine() -> None:
    assert abs(clock.now() - time.monotonic()) < 5
    assert abs(clock.wall() - time.time()) < 5
