"""Kadshare's RPCs: ``rpc_*`` handlers (incoming) and ``call_*`` helpers (outgoing).

Built on ``kademlia.protocol.KademliaProtocol`` (its ``get_refresh_ids`` and the
``call_ping`` hook its routing table uses), with the datagram layer taken from
``DatagramRpc`` instead of ``rpcudp``.  Messages (args after the method name; every
request starts with the sender's 20-byte node id, every reply is a map with ``id``)::

    ping(sender_id[, nonce])              -> {id[, key, sig]}
    find_node(sender_id, target)          -> {id, nodes: [[id, host, port], ...]}
    find_records(sender_id, key, offset)  -> {id, nodes, records: [bin...], next: int|nil}
    store(sender_id, key, [record bin])   -> {id, stored: int, refused: int}

A sender enters the routing table only after it answered a ping of ours carrying a
nonce with the public key of its id and a signature (``admission.py``): an unknown
requester is answered, then pinged (rate-limited), and added when the proof comes back.
Rate limits and the amplification budget live in ``ratelimit.py``, id proofs and probes
in ``admission.py``, table admission and record handoff in ``handoff.py`` (mixins).
Upstream ``welcome_if_new`` hashed stored keys a second time before measuring distances;
here a stored key is already the 160-bit digest.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections import OrderedDict
from typing import Any

import msgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from . import clock
from .admission import ID_LEN, NONCE_LEN, Admission, ProvenIds, check_id, check_nonce, make_proof
from .config import DhtConfig
from .errors import InvalidRecord
from .handoff import Handoff
from .identity import Identity
from .ratelimit import FIND_OVERHEAD, RequestGate, fit_contacts, trim_reply
from .routing import KadNode, RoutingTable
from .storage import RecordStore
from .transport import Address, BadRequest, DatagramRpc, RpcError

log = logging.getLogger(__name__)




@functools.lru_cache(maxsize=4096)
def usable_host(host: str) -> bool:
    """An IP literal a contact may have: never a name (resolving it would block the loop
    and let a stranger steer our packets), never unspecified, multicast or broadcast."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or host == "255.255.255.255")


def parse_contacts(value: object, limit: int) -> list[tuple[bytes, str, int]]:
    """(id, host, port) triples from a reply; ill-shaped entries skipped, at most ``limit``."""
    out: list[tuple[bytes, str, int]] = []
    if type(value) is not list:
        return out
    for item in value[: limit * 2]:
        if type(item) is list and len(item) == 3:
            nid, host, port = item
            if (
                type(nid) is bytes and len(nid) == ID_LEN
                and type(host) is str and 0 < len(host) <= 253
                and type(port) is int and 0 < port < 65536
                and usable_host(host)
            ):
                out.append((nid, host, port))
                if len(out) >= limit:
                    break
    return out


def parse_nodes(value: object, limit: int) -> list[Node]:
    """Contacts from a reply as kademlia Nodes."""
    return [KadNode(*triple) for triple in parse_contacts(value, limit)]


class KadshareProtocol(RequestGate, Admission, Handoff, DatagramRpc, KademliaProtocol):
    """Handlers and calls of the kadshare DHT; see the module docstring."""

    RPC_METHODS = frozenset({"ping", "find_node", "find_records", "store"})

    def __init__(self, source_node: Node, storage: RecordStore, config: DhtConfig,
                 identity: Identity | None = None) -> None:
        DatagramRpc.__init__(self, config)
        # KademliaProtocol.__init__ would build rpcudp state and upstream's table
        self.source_node = source_node
        #: signs id proofs; without it (unit tests) this node is never admitted by others
        self.identity = identity
        self._ids = ProvenIds(config.verified_ids_max, config.dead_contact_memory)
        self._proving: set[bytes] = set()
        self.storage = storage
        self.router = RoutingTable(self, config.k, source_node, config)
        self._probed: OrderedDict[Address, float] = OrderedDict()
        self._probe_tokens = config.welcome_pings_per_second
        self._probe_refill = clock.now()
        self.tasks: set[asyncio.Task] = set()
        self._suspects: OrderedDict[bytes, float] = OrderedDict()
        self._misses: OrderedDict[bytes, int] = OrderedDict()
        #: node id -> clock.now() of its last reply (liveness checks ping the oldest).
        self._heard: OrderedDict[bytes, float] = OrderedDict()
        #: ids whose old address is being pinged because they answered from a new one.
        self._moving: set[bytes] = set()
        self._newcomers: dict[bytes, Node] = {}
        self._handoff_timer: asyncio.TimerHandle | None = None
        # node id -> IP it answered one of our requests from (bounded LRU); the store
        # prefers records whose owner answered from the address the record claims
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        storage.reachable = self.verified_host
        self._init_gate(config)

    def verified_host(self, node_id_hex: str) -> str | None:
        """The IP ``node_id_hex`` last answered our requests from, or None."""
        try:
            return self._verified.get(bytes.fromhex(node_id_hex))
        except ValueError:
            return None

    def _note_verified(self, node_id: bytes, host: str) -> None:
        old = self._verified.get(node_id)
        self._verified[node_id] = host
        if old is None or old != host:
            self.storage.reachability_changed()
            if len(self._verified) > self.config.verified_ids_max:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(node_id)

    def get_refresh_ids(self) -> list[bytes]:
        """A random id in each bucket not touched for ``refresh_interval`` (paper §2.3)."""
        return [self.refresh_id(bucket) for bucket in self.router.lonely_buckets()]

    @staticmethod
    def refresh_id(bucket: Any) -> bytes:
        """A random id in ``bucket``'s range, drawn from ``clock.rng()`` (upstream used
        the global ``random``)."""
        return clock.rng().randint(*bucket.range).to_bytes(ID_LEN, "big")

    def ping_bucket_head(self, head: Node) -> None:
        """A newcomer found a full bucket: check its least-recently-seen contact, which
        moves to the tail if it answers and makes room after repeated misses (§4.1)."""
        if self.backing_off():
            self.stats["probes_backed_off"] += 1
            return
        self.spawn(self.call_ping(head))

    def __getattr__(self, name: str) -> Any:
        # rpcudp turns every unknown attribute into a remote call; we do not
        raise AttributeError(name)

    # -- background tasks -------------------------------------------------------------------
    def spawn(self, coro: Any) -> asyncio.Task | None:
        """Run ``coro`` in the background; its errors are logged, never lost."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, RpcError):
                log.warning("background task failed: %r", exc)

    def close(self) -> None:
        super().close()
        self._close_gate()
        if self._handoff_timer is not None:
            self._handoff_timer.cancel()
            self._handoff_timer = None
        for task in list(self.tasks):
            task.cancel()

    # -- incoming ---------------------------------------------------------------------------
    def _me(self) -> bytes:
        return self.source_node.id

    def _nodes_for(self, target: bytes, addr: Address) -> list[list]:
        """The k closest contacts, minus the asker and contacts we suspect (missed a
        timeout and have not answered since): after a crash wave, a node that has seen
        a contact die stops handing it out, so suspicion spreads through replies and
        other nodes' lookups stop paying timeouts for it (issue 16)."""
        k = self.config.k
        near = self.router.find_neighbors(KadNode(target), k + 8)
        out = [[n.id, n.ip, n.port] for n in near
               if (n.ip, n.port) != addr and not (self._suspects and self.is_suspect(n.id))]
        return out[:k]

    def rpc_ping(self, sender: Address, sender_id: bytes, nonce: object = None) -> dict:
        self._note_sender(sender, sender_id)
        if nonce is None or self.identity is None:
            return {"id": self._me()}
        return {"id": self._me(), **make_proof(self.identity, check_nonce(nonce), sender_id)}

    def rpc_find_node(self, sender: Address, sender_id: bytes, target: bytes,
                      cookie: object = None) -> dict:
        self._note_sender(sender, sender_id)
        nodes = self._nodes_for(check_id(target, "target"), sender)
        limit = self._reply_budget(sender, cookie)
        if limit is None:
            return {"id": self._me(), "nodes": nodes}
        reply = {"id": self._me(), "nodes": fit_contacts(nodes, limit - FIND_OVERHEAD),
                 "cookie": self._cookie_for(sender)}
        return trim_reply(reply, limit)

    def rpc_find_records(self, sender: Address, sender_id: bytes, key: bytes,
                         offset: int = 0, cookie: object = None) -> dict:
        self._note_sender(sender, sender_id)
        key = check_id(key, "key")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise BadRequest("offset must be an int >= 0")
        limit = self._reply_budget(sender, cookie)
        nodes = self._nodes_for(key, sender)
        room = self.config.max_datagram
        if limit is not None:
            room = min(room, limit)
            nodes = fit_contacts(nodes, room - FIND_OVERHEAD)
        found = sorted(self.storage.records(key), key=lambda re: (re[0].node_id, re[0].file_id))
        budget = room - FIND_OVERHEAD - len(msgpack.packb(nodes))
        records: list[bytes] = []
        index = offset
        while index < len(found):
            size = len(found[index][1]) + 3
            if size > budget:
                break
            budget -= size
            records.append(found[index][1])
            index += 1
        reply = {
            "id": self._me(), "nodes": nodes, "records": records,
            "next": index if index < len(found) else None,
        }
        if limit is not None:
            reply["cookie"] = self._cookie_for(sender)
            reply = trim_reply(reply, limit, offset)
        return reply

    def rpc_store(self, sender: Address, sender_id: bytes, key: bytes, records: list) -> dict:
        self._note_sender(sender, sender_id)
        key = check_id(key, "key")
        if not isinstance(records, list):
            raise BadRequest("records must be an array")
        stored = refused = 0
        for raw in records[:self.config.max_records_per_store]:
            try:
                status = self.storage.put_encoded(key, raw, sender)
            except InvalidRecord as exc:
                refused += 1
                self.stats["records_refused"] += 1
                log.debug("refused record from %s: %s", sender, exc)
                continue
            if status in (RecordStore.STORED, RecordStore.REPLACED, RecordStore.DUPLICATE):
                stored += 1
            else:
                refused += 1
        return {"id": self._me(), "stored": stored, "refused": refused}

    # -- replies ----------------------------------------------------------------------------
    def accept_reply(self, node: Node | None, addr: Address, body: Any,
                     nonce: bytes | None = None) -> tuple[Node, dict]:
        """Validate a reply map; the responder enters the table once it proved its id."""
        if not isinstance(body, dict) or not isinstance(body.get("id"), bytes) \
                or len(body["id"]) != ID_LEN:
            self.stats["bad_replies"] += 1
            raise RpcError(f"ill-shaped reply from {addr}")
        rid = body["id"]
        self._heard[rid] = clock.now()
        self._heard.move_to_end(rid)
        if len(self._heard) > self.config.contact_memory:
            self._heard.popitem(last=False)
        if self._suspects:
            self._suspects.pop(rid, None)
        if self._misses:
            self._misses.pop(rid, None)
        if node is not None and node.id == rid:
            responder = node
        else:
            responder = KadNode(rid, addr[0], addr[1])
            if node is not None:
                self.router.remove_contact(node)  # same address, new identity
        if addr not in self._proven:
            self._prove(addr)  # it answered what we sent there: it receives our datagrams
        if "cookie" in body:
            self._take_cookie(addr, body)
        if rid != self._me():
            self._note_verified(rid, addr[0])
            self._admit_if_proven(responder, addr, body, nonce)
        return responder, body

    def suspect(self, node_id: bytes, for_seconds: float | None = None) -> None:
        """A contact missed its soft timeout: other lookups skip it until it answers.

        Right after a crash wave every lookup meets the same dead contacts; each then
        costs one soft timeout per node rather than one per lookup.  A suspicion ends
        when the contact answers anything or after ``for_seconds`` (default
        ``rpc_timeout_max``; a contact that missed the hard timeout is remembered for
        ``dead_contact_memory``).
        """
        span = self.config.rpc_timeout_max if for_seconds is None else for_seconds
        until = clock.now() + span
        if self._suspects.get(node_id, 0.0) > until:
            return
        self._suspects[node_id] = until
        self._suspects.move_to_end(node_id)
        if len(self._suspects) > self.config.suspect_memory:
            self._suspects.popitem(last=False)

    def is_suspect(self, node_id: bytes) -> bool:
        until = self._suspects.get(node_id)
        if until is None:
            return False
        if clock.now() < until:
            return True
        del self._suspects[node_id]
        return False

    def contact_failed(self, node: Node) -> None:
        """No reply within the hard timeout: lookups skip it for a while; after
        ``stale_after_misses`` misses in a row it is replaced if its bucket has a
        replacement waiting, or dropped if the bucket keeps ``dead_evict_floor`` other
        contacts not suspect (below that floor a stale contact beats an empty slot)."""
        if node.id is None:
            return
        self.suspect(node.id, self.config.dead_contact_memory)
        misses = self._misses.pop(node.id, 0) + 1
        bucket = self.router.buckets[self.router.get_bucket_for(node)]
        if misses >= self.config.stale_after_misses and (
                bucket.replacement_nodes or self._others_alive(bucket, node.id)):
            self.router.remove_contact(node)
            return
        self._misses[node.id] = misses
        if len(self._misses) > self.config.contact_memory:
            self._misses.popitem(last=False)

    def _others_alive(self, bucket: Any, dead_id: bytes) -> bool:
        floor = self.config.dead_evict_floor
        alive = 0
        for nid in bucket.nodes:
            if nid != dead_id and not self.is_suspect(nid):
                alive += 1
                if alive >= floor:
                    return True
        return False

    # -- outgoing ---------------------------------------------------------------------------
    async def _call(self, node: Node, method: str, args: list,
                    nonce: bytes | None = None) -> dict:
        addr = (node.ip, node.port)
        try:
            body = await self.call(addr, method, [self._me(), *args])
        except RpcError:
            if method != "store":
                self.contact_failed(node)
            raise
        return self.accept_reply(node, addr, body, nonce)[1]

    async def call_ping(self, node_to_ask: Node) -> dict | None:
        """Ping; used to verify newcomers and by the routing table for a full bucket.
        A contact that has not proved its id at this address is asked to (a nonce)."""
        addr = (node_to_ask.ip, node_to_ask.port)
        nonce = None if (node_to_ask.id, addr) in self._ids else clock.random_bytes(NONCE_LEN)
        try:
            return await self._call(node_to_ask, "ping", [] if nonce is None else [nonce], nonce)
        except RpcError:
            return None

    async def ping_address(self, addr: Address) -> Node | None:
        """Ping a bare address (bootstrap); the responder enters the table once its
        answer proves its id."""
        nonce = clock.random_bytes(NONCE_LEN)
        try:
            body = await self.call(addr, "ping", [self._me(), nonce])
            return self.accept_reply(None, addr, body, nonce)[0]
        except RpcError:
            return None

    async def call_store_records(self, node: Node, key: bytes, encoded: list[bytes]) -> int:
        """Store records at ``node`` in as many datagrams as needed; return how many took."""
        stored = 0
        for chunk in chunk_records(encoded, self.config.max_datagram - 128,
                                   self.config.max_records_per_store):
            try:
                reply = await self._call(node, "store", [key, chunk])
            except RpcError:
                return stored
            got = reply.get("stored")
            if isinstance(got, int):
                stored += got
        return stored

    async def probe_bucket(self, bucket: Any, tries: int = 2) -> bool:
        """Refresh ``bucket`` with one ``find_node`` instead of a lookup: ask its
        least-recently-seen contact for a random id in the bucket's range.

        A lookup to refresh a bucket asks ~20-40 nodes; what the bucket needs is to learn
        whether its contacts still answer (a miss counts towards eviction, as in any
        call) and a few fresh replacements near the range (the answer's contacts, proven
        only when they could take a slot).  libtorrent's DHT refreshes this way
        (``node::tick`` -> ``send_single_refresh``, src/kademlia/node.cpp).  Tries the
        next contact when one does not answer; True if one did (the bucket is then
        marked fresh)."""
        asked = 0
        for node in list(bucket.nodes.values()):
            if asked >= tries:
                break
            if self._suspects and self.is_suspect(node.id):
                continue
            asked += 1
            self.stats["refresh_probes"] += 1
            target = self.refresh_id(bucket)
            try:
                body = await self._call(node, "find_node",
                                        self.cookie_args((node.ip, node.port), [target]))
            except RpcError:
                continue
            low, high = bucket.range
            me = self._me()
            for peer in parse_nodes(body.get("nodes"), self.config.k):
                if low <= peer.long_id <= high and peer.id != me \
                        and not self.router.contains(peer.id):
                    self._admit_if_proven(peer, (peer.ip, peer.port), {}, None)
            bucket.touch_last_updated()
            return True
        return False

    def last_heard(self, node_id: bytes) -> float:
        """``clock.now()`` of the node's last reply; -inf if none is remembered."""
        return self._heard.get(node_id, float("-inf"))


def chunk_records(encoded: list[bytes], budget: int, max_count: int) -> list[list[bytes]]:
    """Split encoded records into groups of at most ``max_count`` whose msgpack array
    fits ``budget`` bytes."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for raw in encoded:
        item = len(raw) + 3
        if current and (size + item > budget or len(current) >= max_count):
            chunks.append(current)
            current, size = [], 0
        current.append(raw)
        size += item
    if current:
        chunks.append(current)
    return chunks
