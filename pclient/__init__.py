"""kadshare client: a library (``Client``) and the ``kadshare`` command.

The client speaks to one node over its REST API and to providers over gRPC only.
"""

from pclient.client import DEFAULT_NODE_URL, BadFileId, Client, check_file_id, upload_file
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
