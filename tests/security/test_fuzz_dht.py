"""Fuzzing the DHT datagram layer: the decoder directly, then real nodes over real UDP.

Anyone on the Internet can send a datagram to a node's DHT port. Properties: the decoder
raises only ``MalformedDatagram``; a node fed every generated datagram over UDP keeps
answering pings and lookups, never hits an internal error (a handler exception caused by
remote input), keeps its pending-call table and store bounded, and stores nothing that
does not verify. The dht owner's tests (``tests/dht``) cover fixed malformed shapes;
these generate them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.identity import Identity
from dht.records import encode_record
from dht.transport import MalformedDatagram, decode_datagram
from tests.security.fuzzing import budget, genuine_records
from tests.security.nodethread import SmallNet
from tests.security.stranger import Stranger, raw_request

pytestmark = budget()
OWNER = Identity.generate()
FILE_ID = hashlib.sha256(b"fuzz target file").hexdigest()
GENUINE = genuine_records(OWNER, FILE_ID, "target file.bin", "127.0.0.1:9", ttl=300)

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.text(max_size=30) | st.binary(max_size=60)
    | st.binary(min_size=20, max_size=20) | st.binary(min_size=8, max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=20,
)
ids = st.binary(min_size=20, max_size=20)
methods = st.sampled_from(
    ["ping", "find_node", "find_records", "store", "rpc_ping", "__init__", "close",
     "_drop", "call_ping", "welcome_if_new", ""]
) | st.text(max_size=12) | values
mutated_records = st.sampled_from(GENUINE).flatmap(
    lambda raw: st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)).map(
        lambda pi: raw[: pi[0]] + bytes([pi[1]]) + raw[pi[0] + 1:]
    )
)
record_lists = st.lists(mutated_records | st.sampled_from(GENUINE) | values, max_size=70)
# well-formed method names with arguments that are almost right
near_requests = st.one_of(
    st.tuples(st.just("ping"), st.lists(ids | values, max_size=3)),
    st.tuples(st.just("find_node"), st.tuples(ids, ids | values).map(list)),
    st.tuples(st.just("find_records"),
              st.tuples(ids, ids | values, st.integers(-5, 2**64 - 1) | values).map(list)),
    st.tuples(st.just("store"), st.tuples(ids, ids | values, record_lists | values).map(list)),
)
envelopes = st.builds(
    lambda v, k, m, b: msgpack.packb([v, k, m, b], use_bin_type=True),
    st.just(1) | values, st.integers(-1, 3) | values,
    st.binary(min_size=8, max_size=8) | values, values,
)
datagrams = st.one_of(
    st.binary(max_size=9000),
    envelopes,
    st.builds(raw_request, methods, st.lists(values, max_size=5) | values),
    st.builds(lambda mr, mid: raw_request(mr[0], mr[1], mid), near_requests,
              st.binary(min_size=8, max_size=8)),
    st.lists(values, max_size=6).map(lambda v: msgpack.packb(v, use_bin_type=True)),
)


class TestDecoder:
    @given(datagrams)
    def test_only_malformed_escapes(self, data: bytes) -> None:
        try:
            decode_datagram(data, 8192)
        except MalformedDatagram:
            pass


@pytest.fixture
def net() -> Iterator[SmallNet]:
    net = SmallNet(3)
    try:
        yield net
    finally:
        net.close()


def _stats(node) -> dict:
    return dict(node.protocol.stats)


class TestOverUdp:
    # the node's own background loops use `random` on their thread while examples run
    @pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
    def test_node_survives_fuzzed_datagrams(self, net: SmallNet) -> None:
        target, helper, _ = net.nodes
        fid = net.announce(helper, "survivor file.txt", 8)
        addr = ("127.0.0.1", target.port)
        before = target.stored_record_count()
        rss_before = _rss_kib()
        sent = [0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)

            @given(datagrams)
            @settings(database=None)
            def send(data: bytes) -> None:
                try:
                    sock.sendto(data, addr)
                except OSError:  # message too long for UDP: cannot reach the node at all
                    return
                sent[0] += 1
                if sent[0] % 50 == 0:  # keep pace with the node: let it drain its buffer
                    assert net.run(_ping(net, helper, target), timeout=30)

            send()

        stats = _stats(target)
        # still answers a ping and a lookup, from a node that never saw the garbage
        assert net.run(_ping(net, helper, target), timeout=30)
        found = net.run(helper.find_providers(fid), timeout=60)
        assert [r.node_id for r in found] == [helper.node_id], found
        hits = net.run(target.search("survivor"), timeout=60)
        assert [h.file_id for h in hits] == [fid]
        assert stats.get("internal_errors", 0) == 0, stats
        assert target.protocol.pending_count() < 100
        # nothing unverifiable got stored; at most the genuine records we sent
        assert target.stored_record_count() <= before + len(GENUINE)
        grown = _rss_kib() - rss_before
        # the whole process (three nodes and hypothesis itself): bounded, not per datagram
        assert grown < 256 * 1024, f"RSS grew {grown} KiB over {sent[0]} datagrams"
        print(f"fuzz over UDP: {sent[0]} datagrams sent, RSS +{grown} KiB, node stats {stats}")


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _ping(net: SmallNet, helper, target) -> bool:
    return await helper.protocol.ping_address(("127.0.0.1", target.port)) is not None


def _steerable(host: str) -> bool:
    """True for an address outside this machine (never send fuzz traffic there)."""
    try:
        return not ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class TestReplies:
    """The node as a client: a contact in its table answers lookups with anything."""

    @pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
    def test_lookups_survive_fuzzed_replies(self, net: SmallNet) -> None:
        victim, helper, _ = net.nodes
        fid = net.announce(helper, "reply target.txt", 3)
        genuine = [encode_record(r) for r in net.run(helper.find_providers(fid))]
        evil_id = bytes(range(20))
        current: list = [None]

        def answer(method: str, args: list, addr: tuple[str, int]):  # noqa: ANN202
            return {"id": evil_id} if method == "ping" else current[0]

        evil = net.run(Stranger.open(answer=answer))
        ports = st.sampled_from([helper.port, victim.port, evil.address[1]]) | st.sampled_from(
            [0, -1, 65536, 70000]) | values
        hosts = st.sampled_from(["127.0.0.1", "127.0.0.2", "localhost", "0.0.0.0", "::1",
                                 "255.255.255.255", "224.0.0.1", "", "a" * 300]) | st.text(
            max_size=20).filter(lambda h: not _steerable(h))
        contact = st.tuples(ids | st.just(evil_id) | values, hosts, ports).map(list)
        records = st.lists(st.sampled_from(genuine) | mutated_records | values, max_size=30)
        replies = values | st.fixed_dictionaries(
            {"id": st.just(evil_id) | ids | values},
            optional={"nodes": st.lists(contact | values, max_size=25) | values,
                      "records": records | values,
                      "next": st.none() | st.integers(-3, 2**64 - 1) | values},
        )
        runs = [0]
        try:
            @given(replies)
            @settings(database=None, max_examples=max(1, settings.default.max_examples // 3))
            def lookup(reply: object) -> None:
                current[0] = reply
                if evil_id.hex() not in {c.node_id for c in victim.contacts()}:
                    net.run(evil.request(("127.0.0.1", victim.port), "ping", [evil_id]))
                found = net.run(victim.find_providers(fid), timeout=60)
                assert {r.node_id for r in found} <= {helper.node_id}, found
                runs[0] += 1

            lookup()
        finally:
            evil.close()
        stats = dict(victim.stats)
        assert stats.get("internal_errors", 0) == 0, stats
        assert [r.node_id for r in net.run(victim.find_providers(fid))] == [helper.node_id]
        assert net.run(_ping(net, helper, victim), timeout=30)
        print(f"fuzzed replies: {runs[0]} lookups, victim stats {stats}")
