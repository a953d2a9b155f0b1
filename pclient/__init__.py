"""kadshare client: a library (``Client``) and the ``kadshare`` command.

The client speaks to one node over its REST API and to providers over gRPC only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pclient.client import DEFAULT_NODE_URL, Client, check_file_id, upload_file
    from pclient.download import (
        DownloadConfig,
        DownloadProgress,
        DownloadResult,
        download_file,
        fetch_info,
    )
    from pclient.errors import (
        AmbiguousId,
        AmbiguousName,
        BadFileId,
        ChecksumMismatch,
        ClientError,
        DestinationError,
        NoAnswer,
        NodeError,
        NodeUnreachable,
        NoProviders,
        NotFound,
        TransferFailed,
        UploadFailed,
    )

__all__ = [
    "DEFAULT_NODE_URL",
    "AmbiguousId",
    "AmbiguousName",
    "BadFileId",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "DestinationError",
    "DownloadConfig",
    "DownloadProgress",
    "DownloadResult",
    "NoAnswer",
    "NoProviders",
    "NodeError",
    "NodeUnreachable",
    "NotFound",
    "TransferFailed",
    "UploadFailed",
    "check_file_id",
    "download_file",
    "fetch_info",
    "upload_file",
]

# Imported on first use (PEP 562): `import pclient.cli` then costs docopt, not httpx, grpc
# and rich; `kadshare get --from` never loads httpx.
_HOMES = {"DEFAULT_NODE_URL": "pclient.client", "Client": "pclient.client",
          "check_file_id": "pclient.client", "upload_file": "pclient.client",
          "DownloadConfig": "pclient.download", "DownloadProgress": "pclient.download",
          "DownloadResult": "pclient.download", "download_file": "pclient.download",
          "fetch_info": "pclient.download"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module(_HOMES.get(name, "pclient.errors")), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pclient' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
