"""kadshare's DHT: a Kademlia variant with signed multi-provider and keyword records.

Public API (docs/ARCHITECTURE.md): ``DhtNode``, ``DhtConfig``, ``Identity``, ``ProviderRecord``,
``SearchHit``, ``LookupStats``, ``Contact`` and the errors in ``dht.errors``.
"""

from .config import DhtConfig
from .errors import DhtError, InvalidRecord, RecordTooLarge
from .identity import Identity
from .node import DhtNode
from .records import ProviderRecord
from .results import LookupStats, SearchHit
from .routing import Contact

__all__ = [
    "Contact",
    "DhtConfig",
    "DhtError",
    "DhtNode",
    "Identity",
    "InvalidRecord",
    "LookupStats",
    "ProviderRecord",
    "RecordTooLarge",
    "SearchHit",
]
