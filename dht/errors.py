"""Errors raised by the dht package.

::

    DhtError                 base of everything this package raises on purpose
    ├── NoKnownPeers         an operation needed the network but the routing table is empty
    ├── StoreFailed          no node (not even this one) accepted a record
    ├── RecordTooLarge       an encoded record exceeds DhtConfig.max_record_bytes
    └── InvalidRecord        (also a ValueError) malformed, forged, expired or ill-bound record

Remote peers never receive these: a bad datagram is dropped and counted.
"""

from __future__ import annotations


class DhtError(Exception):
    """Base class for every error the dht package raises on purpose."""


class NoKnownPeers(DhtError):
    """The routing table is empty, so the network cannot be reached."""


class StoreFailed(DhtError):
    """No node accepted the record (not even the local store)."""


class InvalidRecord(DhtError, ValueError):
    """A record (or an argument that becomes one) is malformed, forged or out of bounds."""


class RecordTooLarge(InvalidRecord):
    """An encoded record is larger than ``DhtConfig.max_record_bytes``."""
