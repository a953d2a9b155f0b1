"""Tunables of the peer: one frozen value object, filled by ``cli.py`` and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dht.config import DhtConfig
from kadcommon.merkle import CHUNK_SIZE

#: Bytes per hashed chunk in ``GetInfo``: the protocol constant the Merkle file id uses.
DEFAULT_CHUNK_SIZE = CHUNK_SIZE
#: Bytes per ``Download`` message: 1 MiB is the largest the contract allows and the fastest.
DEFAULT_MESSAGE_SIZE = 1024 * 1024
#: Largest upload taken when ``--max-upload`` is not given (1 GiB).
DEFAULT_MAX_UPLOAD = 1024 * 1024 * 1024
#: Seconds between two scans of the share folder.
DEFAULT_SCAN_INTERVAL = 2.0
#: Seconds between two saves of the routing-table contacts.
DEFAULT_CONTACTS_INTERVAL = 30.0
#: Seconds a REST call waits for a DHT lookup before answering 504.
DEFAULT_LOOKUP_TIMEOUT = 30.0
#: Seconds the start waits for the first scan and its announcements before printing.
DEFAULT_STARTUP_INDEX_TIMEOUT = 30.0
#: Seconds a transfer may wait on the other side (a reader taking no data, an uploader
#: sending nothing) before the stream is closed, so stuck clients cannot pile up.
DEFAULT_STALL_TIMEOUT = 60.0
#: Seconds ``POST /files`` waits for the hash before answering 202 (hashing goes on).
DEFAULT_SHARE_WAIT = 20.0
#: Seconds a file's size and mtime must stay unchanged before it is hashed and announced,
#: so a file still being copied in is not announced at every size it passes through.
DEFAULT_SETTLE_SECONDS = 3.0
#: Seconds between liveness sweeps: contacts silent for twice as long are pinged, so a
#: peer that left drops out of ``/peers`` within about a minute. 0 turns sweeps off.
DEFAULT_LIVENESS_INTERVAL = 20.0
#: Downloads served at the same time (each holds an open file); more get RESOURCE_EXHAUSTED.
DEFAULT_MAX_CONCURRENT_DOWNLOADS = 256
#: Uploads received at the same time; more are refused with RESOURCE_EXHAUSTED.
DEFAULT_MAX_CONCURRENT_UPLOADS = 4


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything one peer needs; paths are made absolute by :meth:`validate`."""

    data_dir: Path
    share_dir: Path | None = None
    host: str = "127.0.0.1"
    dht_port: int = 0
    grpc_port: int = 0
    rest_port: int = 0
    bootstrap: tuple[tuple[str, int], ...] = ()
    accept_uploads: bool = False
    #: With ``accept_uploads``: take uploads without the node's token (``--accept-uploads open``).
    open_uploads: bool = False
    #: Address the REST API listens on; apart from ``host`` so that opening the DHT and
    #: gRPC ports to a network does not expose REST (reads need no token).
    rest_host: str = "127.0.0.1"
    max_upload: int = DEFAULT_MAX_UPLOAD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    message_size: int = DEFAULT_MESSAGE_SIZE
    scan_interval: float = DEFAULT_SCAN_INTERVAL
    contacts_interval: float = DEFAULT_CONTACTS_INTERVAL
    lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT
    startup_index_timeout: float = DEFAULT_STARTUP_INDEX_TIMEOUT
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS
    max_concurrent_downloads: int = DEFAULT_MAX_CONCURRENT_DOWNLOADS
    #: Download streams served at once to one client address (0 = only the total cap).
    max_downloads_per_client: int = 0
    #: Bytes per second sent by all Download streams together (0 = no cap).
    max_upload_rate: int = 0
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    share_wait: float = DEFAULT_SHARE_WAIT
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    liveness_interval: float = DEFAULT_LIVENESS_INTERVAL
    #: Contacts pinged per liveness sweep at most (bounds a large table's traffic).
    liveness_pings_per_sweep: int = 32
    #: Routing contacts written to ``contacts.msgpack`` for the next start.
    saved_contacts_max: int = 64
    #: Seconds a (re)join through bootstrap addresses or saved contacts may take.
    bootstrap_timeout: float = 30.0
    #: Seconds between checks for an empty routing table (then the node rejoins) ...
    rejoin_check_interval: float = 5.0
    #: ... backing off up to this many seconds between attempts during a long outage.
    rejoin_max_backoff: float = 300.0
    #: Seconds a graceful stop waits for the DHT records to be withdrawn.
    leave_timeout: float = 15.0
    #: Seconds one announcement or withdrawal of a file may take (retried at next sync).
    announce_timeout: float = 30.0
    #: Announcements or withdrawals in flight at once (a folder of thousands of files).
    announce_parallel: int = 8
    #: Seconds of hashing after which a scan shows (and caches) the files hashed so far.
    publish_every: float = 5.0
    #: Seconds Sanic lets one REST request run; must exceed ``lookup_timeout`` and
    #: ``share_wait`` so those answer with their own 504/202 rather than a cut connection.
    rest_response_timeout: int = 120
    #: Provider lookups at once while ``/search`` counts each hit's providers.
    search_count_parallel: int = 16
    #: File ids of recent answers kept so a short id prefix can be resolved.
    seen_ids_max: int = 4096
    #: ``None`` means the dht package's defaults.
    dht_config: DhtConfig | None = field(default=None, repr=False)
    #: Serve gRPC without TLS (``--insecure-transfers``; experiments only).
    insecure_transfers: bool = False
    #: Closed network key, 32 bytes (``--network-key``); empty = the public network.
    network_key: bytes = field(default=b"", repr=False)

    def with_changes(self, **changes: Any) -> NodeConfig:
        """Return a validated copy with some fields replaced."""
        return replace(self, **changes).validate()

    def validate(self) -> NodeConfig:
        """Raise ``ValueError`` naming the first option that cannot work; return self."""
        for name in ("dht_port", "grpc_port", "rest_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be 0..65535, got {port}")
        for host, port in self.bootstrap:
            if not host or not 1 <= port <= 65535:
                raise ValueError(f"bad bootstrap address {host}:{port}")
        if self.max_upload < 0:
            raise ValueError("max_upload must be >= 0")
        if len(self.network_key) not in (0, 32):
            raise ValueError("network_key must be 32 bytes (or empty: the public network)")
        if self.chunk_size != CHUNK_SIZE:
            raise ValueError(f"chunk_size must be {CHUNK_SIZE} (part of the file id's definition)")
        if not 16 * 1024 <= self.message_size <= 1024 * 1024:
            raise ValueError("message_size must be 16 KiB..1 MiB")
        if self.scan_interval <= 0 or self.contacts_interval <= 0 or self.stall_timeout <= 0:
            raise ValueError("intervals must be > 0")
        if self.share_wait < 0:
            raise ValueError("share_wait must be >= 0")
        if not 0 <= self.liveness_interval <= 3600:
            raise ValueError("liveness_interval must be 0..3600")
        if not 0 <= self.settle_seconds <= 3600:
            raise ValueError("settle_seconds must be 0..3600")
        self.check_folders()
        if self.max_concurrent_uploads < 1 or self.max_concurrent_downloads < 1:
            raise ValueError("max_concurrent_uploads/downloads must be >= 1")
        if self.max_downloads_per_client < 0 or self.max_upload_rate < 0:
            raise ValueError("max_downloads_per_client and max_upload_rate must be >= 0")
        for name in ("liveness_pings_per_sweep", "saved_contacts_max", "announce_parallel",
                     "search_count_parallel", "seen_ids_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("bootstrap_timeout", "rejoin_check_interval", "rejoin_max_backoff",
                     "leave_timeout", "announce_timeout", "publish_every", "lookup_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.rest_response_timeout <= max(self.lookup_timeout, self.share_wait):
            raise ValueError("rest_response_timeout must exceed lookup_timeout and share_wait "
                             "(they answer within a request)")
        return self

    def check_folders(self) -> None:
        """Refuse layouts where the data folder (private key, token) would be shared.

        A data folder *inside* the share folder is allowed: the catalog never shares it.
        """
        if self.share_dir is None:
            return
        share = Path(os.path.realpath(self.share_dir))
        data = Path(os.path.realpath(self.data_dir))
        if share == data:
            raise ValueError(
                f"--data and --share are the same folder ({share}); the data folder holds "
                "the node's private key and is never shared: pick another --data"
            )
        if data in share.parents:
            raise ValueError(
                f"--share {share} lies inside --data {data}; the data folder is never "
                "shared: pick a share folder outside it"
            )
