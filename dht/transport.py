"""The datagram RPC layer that replaces rpcudp's weak spots.

Wire format (msgpack array, at most ``DhtConfig.max_datagram`` bytes)::

    [version:int, kind:int, msg_id:bin8, body]
    kind 0 request   body = [method:str, args:array]
    kind 1 response  body = any msgpack value (a map for every kadshare RPC)
    kind 2 error     body = str (short reason; the caller fails fast instead of waiting)

What differs from ``rpcudp.RPCProtocol`` (each has a regression test in tests/dht):

* an undecodable or ill-shaped datagram is dropped and counted in ``stats``; nothing is
  raised into an unobserved task (rpcudp raised MalformedMessage from a bare future);
* handlers run synchronously in ``datagram_received``: no task per datagram;
* each call has its own timeout, adapted from measured round-trip times (RFC 6298
  smoothing, per peer address, clamped to ``rpc_timeout_min..rpc_timeout_max``);
* a call whose future the caller cancelled (an abandoned lookup branch) leaves the
  pending table at once, and a late answer is dropped and counted (rpcudp called
  ``set_result`` on the cancelled future and raised, leaking the table entry);
* a response is accepted only from the address the request went to;
* unknown method names get an error reply, never an attribute lookup that turns any
  name into a remote call (rpcudp's ``__getattr__``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack

from kadcommon.netkey import NetworkKey

from . import clock
from .config import PROTOCOL_VERSION, DhtConfig

log = logging.getLogger(__name__)

REQUEST, RESPONSE, ERROR = 0, 1, 2
MSG_ID_LEN = 8

Address = tuple[str, int]


class MalformedDatagram(ValueError):
    """A datagram that is not a well-formed kadshare message."""


class RpcError(Exception):
    """A call failed: timeout, error reply, or the node is shutting down."""


class RpcTimeout(RpcError):
    """No answer within the hard timeout."""


class BadRequest(Exception):
    """Raised by a handler for ill-shaped arguments; the caller gets an error reply."""


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded datagram."""

    kind: int
    msg_id: bytes
    method: str | None
    body: Any


def decode_datagram(data: bytes, max_size: int = 65507,
                    version: int = PROTOCOL_VERSION) -> Message:
    """Parse one datagram; raise MalformedDatagram (never anything else) if it is bad."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedDatagram("not bytes")
    if len(data) > max_size:
        raise MalformedDatagram(f"datagram of {len(data)} bytes exceeds {max_size}")
    if len(data) < 4:
        raise MalformedDatagram("datagram too short")
    try:
        arr = msgpack.unpackb(
            bytes(data), raw=False, use_list=True, strict_map_key=True,
            max_str_len=max_size, max_bin_len=max_size, max_array_len=max_size,
            max_map_len=max_size // 2, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises ValueError, TypeError, ExtraData, ...
        raise MalformedDatagram(f"undecodable: {type(exc).__name__}") from exc
    if not isinstance(arr, list) or len(arr) != 4:
        raise MalformedDatagram("not a 4-element array")
    got, kind, msg_id, body = arr
    if got != version or isinstance(got, bool):
        raise MalformedDatagram(f"unsupported version {got!r:.20}")
    if kind not in (REQUEST, RESPONSE, ERROR) or isinstance(kind, bool):
        raise MalformedDatagram("unknown message kind")
    if not isinstance(msg_id, bytes) or len(msg_id) != MSG_ID_LEN:
        raise MalformedDatagram("bad message id")
    method = None
    if kind == REQUEST:
        if not (isinstance(body, list) and len(body) == 2):
            raise MalformedDatagram("request body must be [method, args]")
        method, body = body
        if not isinstance(method, str) or not isinstance(body, list):
            raise MalformedDatagram("request method must be a str and args an array")
    elif kind == ERROR and not isinstance(body, str):
        raise MalformedDatagram("error body must be a str")
    return Message(kind, msg_id, method, body)


def encode_datagram(kind: int, msg_id: bytes, body: Any,
                    version: int = PROTOCOL_VERSION) -> bytes:
    """Encode one message (see module docstring)."""
    return msgpack.packb([version, kind, msg_id, body], use_bin_type=True)


class RttEstimator:
    """Smoothed RTT and variance (RFC 6298), per address and overall, and the overall
    minimum over the last ``rtt_min_window`` to 2 x ``rtt_min_window`` seconds (two
    windows, as BBR's min_rtt filter and QUIC's min_rtt: queueing on a busy loop or
    link inflates the smoothed RTT but rarely every sample)."""

    __slots__ = ("_per_addr", "_global", "_max_addrs", "_cfg", "_min_now", "_min_before",
                 "_min_since")

    def __init__(self, config: DhtConfig, max_addrs: int = 16) -> None:
        self._per_addr: OrderedDict[Address, tuple[float, float]] = OrderedDict()
        self._global: tuple[float, float] | None = None
        self._max_addrs = max_addrs
        self._cfg = config
        self._min_now = float("inf")  # minimum of the current window
        self._min_before = float("inf")  # minimum of the window before it
        self._min_since = float("-inf")  # clock.now() the current window began

    @staticmethod
    def _update(old: tuple[float, float] | None, sample: float) -> tuple[float, float]:
        if old is None:
            return (sample, sample / 2)
        srtt, var = old
        var = 0.75 * var + 0.25 * abs(srtt - sample)
        return (0.875 * srtt + 0.125 * sample, var)

    def observe(self, addr: Address, sample: float) -> None:
        self._per_addr[addr] = self._update(self._per_addr.get(addr), sample)
        self._per_addr.move_to_end(addr)
        if len(self._per_addr) > self._max_addrs:
            self._per_addr.popitem(last=False)
        self._global = self._update(self._global, sample)
        now = clock.now()
        if now - self._min_since >= self._cfg.rtt_min_window:
            elapsed = now - self._min_since
            self._min_before = self._min_now if elapsed < 2 * self._cfg.rtt_min_window \
                else float("inf")
            self._min_now, self._min_since = sample, now
        elif sample < self._min_now:
            self._min_now = sample

    def timeout_for(self, addr: Address) -> float:
        """The soft (adaptive) timeout of the next call to ``addr``."""
        cfg = self._cfg
        est = self._per_addr.get(addr)
        if est is None:
            if self._global is None:
                return cfg.rpc_timeout_initial
            srtt, var = self._global
            value = min(srtt + 4 * var, cfg.rpc_timeout_initial)
        else:
            srtt, var = est
            value = srtt + 4 * var
        return min(max(value, cfg.rpc_timeout_min), cfg.rpc_timeout_max)

    def forget(self, addr: Address) -> None:
        self._per_addr.pop(addr, None)

    def typical(self) -> float:
        """The smoothed round trip over all addresses, seconds (0.0 before any sample)."""
        return self._global[0] if self._global is not None else 0.0

    def recent_min(self) -> float:
        """The smallest round trip of the last ``rtt_min_window`` to 2 x
        ``rtt_min_window`` seconds, seconds (0.0 if none was observed in that time)."""
        if clock.now() - self._min_since >= 2 * self._cfg.rtt_min_window:
            return 0.0
        low = min(self._min_now, self._min_before)
        return low if low != float("inf") else 0.0


class _Pending:
    __slots__ = ("future", "timer", "addr", "sent_at")

    def __init__(self, future: asyncio.Future, timer: asyncio.TimerHandle, addr: Address,
                 sent_at: float) -> None:
        self.future = future
        self.timer = timer
        self.addr = addr
        self.sent_at = sent_at


class DatagramRpc(asyncio.DatagramProtocol):
    """Request/response over one UDP socket; subclasses provide ``rpc_<method>``."""

    #: method names a remote peer may call; each maps to ``rpc_<name>``
    RPC_METHODS: frozenset[str] = frozenset()

    def __init__(self, config: DhtConfig) -> None:
        self.config = config
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, _Pending] = {}
        self.rtt = RttEstimator(config, config.rtt_addresses)
        self.stats: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._closed = False
        #: size of the request being handled (handlers bound unverified replies by it)
        self.request_size = 0
        self._recent_calls = 0.0
        self._recent_timeouts = 0.0
        self._recent_at = clock.now()
        #: closed network: datagrams are sealed/opened with its MAC (kadcommon.netkey)
        self.netkey = NetworkKey(config.network_key) if config.network_key else None

    # -- asyncio.DatagramProtocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio hands a DatagramTransport to a datagram protocol

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.fail_all_pending()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.: the call will time out; nothing else to do
        self.stats["socket_errors"] += 1

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Decode, dispatch, reply. Never raises: bad input is dropped and counted."""
        if self.netkey is not None:
            opened = self.netkey.open(data)
            if opened is None:
                self._drop("bad_network_mac", f"dropped datagram from {addr}: no valid "
                           "network-key MAC (a peer outside this closed network?)")
                return
            data = opened
        try:
            addr = (sys.intern(addr[0]), addr[1])
            if self.drop_early(data, addr):
                return
            msg = decode_datagram(data, self.config.max_datagram,
                                  self.config.protocol_version)
        except MalformedDatagram as exc:
            self._drop("malformed", f"dropped malformed datagram from {addr}: {exc}")
            return
        except Exception as exc:  # defensive: an odd address tuple
            self._drop("malformed", f"dropped datagram: {type(exc).__name__}")
            return
        try:
            if msg.kind == REQUEST:
                self._handle_request(msg, addr, len(data))
            else:
                self._handle_reply(msg, addr)
        except Exception:  # a bug must not kill the socket; count and log once
            self.stats["internal_errors"] += 1
            if "internal" not in self._logged:
                self._logged.add("internal")
                log.exception("internal error handling a datagram from %s", addr)

    def _drop(self, what: str, message: str) -> None:
        self.stats[what] += 1
        if what not in self._logged:
            self._logged.add(what)
            log.info("%s (further ones counted in stats[%r], logged at DEBUG)", message, what)
        else:
            log.debug(message)

    def drop_early(self, data: bytes, addr: Address) -> bool:
        """Whether to drop a datagram before decoding it (rate limits); subclasses decide."""
        return False

    def admit(self, method: str, addr: Address) -> bool:
        """Whether to serve a request at all (rate limits); subclasses decide."""
        return True

    def _handle_request(self, msg: Message, addr: Address, size: int = 0) -> None:
        self.stats["requests_in"] += 1
        if msg.method in self.RPC_METHODS and not self.admit(msg.method, addr):
            return  # over its sender's budget: no reply, no work (counted by admit)
        self.request_size = size
        if msg.method not in self.RPC_METHODS:
            self._drop("unknown_method", f"unknown method {msg.method!r:.40} from {addr}")
            self._send(self._encode(ERROR, msg.msg_id, "unknown method"), addr)
            return
        handler = getattr(self, "rpc_" + msg.method)
        try:
            result = handler(addr, *msg.body)
        except (BadRequest, TypeError) as exc:
            self._drop("bad_request", f"bad {msg.method} request from {addr}: {exc}")
            self._send(self._encode(ERROR, msg.msg_id, "bad request"), addr)
            return
        data = self._encode(RESPONSE, msg.msg_id, result)
        if len(data) > self.config.max_datagram:
            self.stats["oversize_reply"] += 1
            log.error("reply to %s of %d bytes exceeds max_datagram", msg.method, len(data))
            data = self._encode(ERROR, msg.msg_id, "reply too large")
        self._send(data, addr)

    def _handle_reply(self, msg: Message, addr: Address) -> None:
        pending = self._pending.get(msg.msg_id)
        if pending is None:
            self._drop("unknown_reply", f"late or unknown reply from {addr}")
            return
        if pending.addr != addr:
            self._drop("spoofed_reply", f"reply from {addr}, expected {pending.addr}")
            return
        del self._pending[msg.msg_id]
        pending.timer.cancel()
        self.rtt.observe(addr, clock.now() - pending.sent_at)
        self._note_outcome(False)
        if pending.future.done():  # cancelled between our check and now: nothing to do
            return
        if msg.kind == RESPONSE:
            self.stats["replies_in"] += 1
            pending.future.set_result(msg.body)
        else:
            self.stats["error_replies_in"] += 1
            pending.future.set_exception(RpcError(f"{addr} answered error: {msg.body:.80}"))

    def _encode(self, kind: int, msg_id: bytes, body: Any) -> bytes:
        return encode_datagram(kind, msg_id, body, self.config.protocol_version)

    def _send(self, data: bytes, addr: Address) -> None:
        if self.transport is None or self._closed:
            return
        if self.netkey is not None:
            data = self.netkey.seal(data)
        try:
            self.transport.sendto(data, addr)
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            self._drop("send_errors", f"send to {addr} failed: {exc}")

    # -- outgoing calls ----------------------------------------------------------------
    def request(self, addr: Address, method: str, args: list) -> tuple[asyncio.Future, float]:
        """Send a request; return (future of the reply body, soft timeout in seconds).

        The future fails with RpcTimeout after ``rpc_timeout_max``; the soft timeout is
        the adaptive estimate after which a lookup stops waiting for this contact.
        Cancelling the future removes the call from the pending table immediately.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        if self._closed or self.transport is None:
            future.set_exception(RpcError("transport closed"))
            return future, 0.0
        if len(self._pending) >= self.config.pending_calls_max:
            self.stats["pending_full"] += 1
            future.set_exception(RpcError("too many calls in flight"))
            return future, 0.0
        msg_id = clock.random_bytes(MSG_ID_LEN)
        while msg_id in self._pending:
            msg_id = clock.random_bytes(MSG_ID_LEN)
        data = self._encode(REQUEST, msg_id, [method, args])
        if len(data) > self.config.max_datagram:
            future.set_exception(RpcError(f"{method} request of {len(data)} bytes too large"))
            return future, 0.0
        soft = self.rtt.timeout_for(addr)
        timer = loop.call_later(self.config.rpc_timeout_max, self._expire, msg_id)
        self._pending[msg_id] = _Pending(future, timer, addr, clock.now())
        future.add_done_callback(functools.partial(self._forget_done, msg_id))
        self.stats["requests_out"] += 1
        self._send(data, addr)
        return future, soft

    async def call(self, addr: Address, method: str, args: list) -> Any:
        """Send a request and wait for the reply (hard timeout); raise RpcError."""
        future, _ = self.request(addr, method, args)
        return await future

    def _expire(self, msg_id: bytes) -> None:
        pending = self._pending.pop(msg_id, None)
        if pending is None:
            return
        self.stats["timeouts"] += 1
        self._note_outcome(True)
        self.rtt.forget(pending.addr)
        if not pending.future.done():
            pending.future.set_exception(RpcTimeout(f"no reply from {pending.addr}"))

    def _forget_done(self, msg_id: bytes, _future: asyncio.Future[Any]) -> None:
        self._forget(msg_id)

    def _forget(self, msg_id: bytes) -> None:
        """Done-callback of every call future: drop a cancelled call from the table."""
        pending = self._pending.get(msg_id)
        if pending is not None and pending.future.done():
            del self._pending[msg_id]
            pending.timer.cancel()
            if pending.future.cancelled():
                self.stats["abandoned"] += 1

    # -- load: the share of recent calls that timed out ----------------------------------
    def _decay(self) -> None:
        now = clock.now()
        factor = 0.5 ** ((now - self._recent_at) / self.config.backoff_window)
        self._recent_calls *= factor
        self._recent_timeouts *= factor
        self._recent_at = now

    def _note_outcome(self, timed_out: bool) -> None:
        self._decay()
        self._recent_calls += 1.0
        if timed_out:
            self._recent_timeouts += 1.0

    def timeout_share(self) -> float:
        """Share of recent calls (decaying, half-life ``backoff_window``) that timed out."""
        self._decay()
        return self._recent_timeouts / self._recent_calls if self._recent_calls else 0.0

    def backing_off(self) -> bool:
        """True while most recent calls time out: add no optional traffic.

        A node whose replies do not come back is either cut off or (in one crowded
        process, or on a saturated uplink) overloaded; probing more makes it worse.
        """
        self._decay()
        cfg = self.config
        return (self._recent_calls >= cfg.backoff_min_calls
                and self._recent_timeouts > cfg.backoff_timeout_share * self._recent_calls)

    def pending_count(self) -> int:
        """Calls awaiting a reply (for tests and metrics)."""
        return len(self._pending)

    def fail_all_pending(self) -> None:
        for msg_id in list(self._pending):
            pending = self._pending.pop(msg_id)
            pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_exception(RpcError("transport closed"))
                pending.future.exception()  # mark retrieved: nobody may be waiting

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()
        self.fail_all_pending()
