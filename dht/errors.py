"""Errors raised by the dht package.

::

    DhtError                 base of everything this package raises on purpose
    ├── RecordTooLarge       an encoded record exceeds DhtConfig.max_record_bytes
    └── InvalidRecord        (also a ValueError) malformed, forged, expired or ill-bound record

Remote peers never receive these: a bad datagram is dropped and counted. A lookup that
reaches nobody is not an error: it returns what it found (nothing) and ``LookupStats``
says how many peers were asked and answered; ``announce`` returns how many nodes took
each record.
"""

from __future__ import annotations


class DhtError(Exception):
    """Base class for every error the dht package raises on purpose."""


class InvalidRecord(DhtError, ValueError):
    """A record (or an argument that becomes one) is malformed, forged or out of bounds."""


class RecordTooLarge(InvalidRecord):
    """An encoded record is larger than ``DhtConfig.max_record_bytes``."""
