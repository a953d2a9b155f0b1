"""Fuzzing the record decoder and validator (``dht.records``).

Every record a node stores or returns passes ``decode_and_verify``; anything a stranger
can put on the wire reaches it. Properties: only ``InvalidRecord`` ever escapes, and a
record that differs from a genuinely signed one in any byte never verifies. The dht
owner's own tests cover the encode/decode round trip (``tests/dht``); these cover hostile
input.
"""

from __future__ import annotations

import hashlib
import time

import msgpack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dht.config import DhtConfig
from dht.errors import InvalidRecord
from dht.identity import Identity
from dht.records import (
    decode_and_verify,
    decode_record,
)
from tests.security.fuzzing import budget, genuine_records

pytestmark = budget()
CONFIG = DhtConfig.for_tests(record_ttl=600)
OWNER = Identity.generate()
FILE_ID = hashlib.sha256(b"holiday photos").hexdigest()
NOW = time.time()

GENUINE = genuine_records(OWNER, FILE_ID, "holiday photos.zip", "10.0.0.1:5000", ttl=600,
                          withdrawal=True)

# msgpack values of every type and a little nesting: what a hostile encoder can produce.
scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True) | st.text(max_size=40) | st.binary(max_size=80)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=24,
)
# fields a record can hold, biased towards plausible ones so the deep checks get reached
plausible = (
    values | st.just(1) | st.sampled_from(["p", "k", "w"]) | st.binary(min_size=20, max_size=20)
    | st.binary(min_size=32, max_size=32) | st.binary(min_size=64, max_size=64)
    | st.floats(min_value=0, max_value=2**41) | st.sampled_from(["a:1", "host:65535", "holiday"])
)


def _only_invalid_record(data: bytes) -> None:
    """Decode and verify; the only acceptable failure is InvalidRecord."""
    try:
        decode_and_verify(data, CONFIG, now=NOW)
    except InvalidRecord:
        pass


class TestRecordDecoder:
    @given(st.binary(max_size=1500))
    def test_random_bytes(self, data: bytes) -> None:
        _only_invalid_record(data)

    @given(st.lists(plausible, min_size=0, max_size=13))
    def test_structured_arrays(self, fields: list) -> None:
        data = msgpack.packb(fields, use_bin_type=True)
        _only_invalid_record(data)
        try:
            decode_record(data, CONFIG.max_record_bytes)
        except InvalidRecord:
            pass

    @given(st.sampled_from(GENUINE), st.data())
    @settings(suppress_health_check=[HealthCheck.too_slow])
    def test_tampered_bytes_never_verify(self, genuine: bytes, data: st.DataObject) -> None:
        """Any change to a signed record's bytes yields a rejection, never a new record."""
        raw = bytearray(genuine)
        for _ in range(data.draw(st.integers(1, 4))):
            op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
            pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
            if op == "flip" and raw:
                raw[pos] ^= 1 << data.draw(st.integers(0, 7))
            elif op == "set" and raw:
                raw[pos] = data.draw(st.integers(0, 255))
            elif op == "cut":
                del raw[pos:pos + data.draw(st.integers(1, 16))]
            else:
                raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        assume(bytes(raw) != genuine)
        try:
            decode_and_verify(bytes(raw), CONFIG, now=NOW)
        except InvalidRecord:
            return
        raise AssertionError(f"tampered record accepted: {bytes(raw)!r}")

    @given(st.sampled_from(GENUINE), st.integers(0, 10), plausible)
    def test_field_replaced_never_verifies(self, genuine: bytes, index: int, value) -> None:
        """Replace one decoded field with any value and re-encode: rejected."""
        fields = msgpack.unpackb(genuine, raw=False)
        assume(index < len(fields))
        fields[index] = value
        data = msgpack.packb(fields, use_bin_type=True)
        assume(data != genuine)
        try:
            decode_and_verify(data, CONFIG, now=NOW)
        except InvalidRecord:
            return
        raise AssertionError(f"record with field {index} replaced accepted: {data!r}")
