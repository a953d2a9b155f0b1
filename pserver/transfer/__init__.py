"""TransferService: wire framing (framing), opt-in uploads (uploads), the servicer and
gRPC server start-up (service)."""

from pserver.transfer.framing import SERVICE_NAME, chunk_header, read_chunk_message, status_for
from pserver.transfer.service import TransferServicer, start_grpc_server, transfer_handler
from pserver.transfer.uploads import UploadReceiver, check_upload_name

__all__ = [
    "SERVICE_NAME", "TransferServicer", "UploadReceiver", "check_upload_name", "chunk_header",
    "read_chunk_message", "start_grpc_server", "status_for", "transfer_handler",
]
