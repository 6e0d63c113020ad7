"""Client channels to tfmesh services: tracing and metrics interceptors, message limits,
optional TLS."""

from __future__ import annotations

from pathlib import Path

import grpc

from shared.grpc_metrics import client_interceptors
from shared.telemetry import Telemetry


def open_channel(
    target: str,
    telemetry: Telemetry | None = None,
    *,
    max_message_bytes: int = 64 * 1024 * 1024,
    root_ca_file: Path | None = None,
    client_cert_file: Path | None = None,
    client_key_file: Path | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to `target`; TLS when a root CA is given, mTLS with a client pair.
    A service's channel (one given its telemetry) is traced and its calls counted."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    interceptors = [*telemetry.client_interceptors(), *client_interceptors()] if telemetry else None
    if root_ca_file is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_ca_file.read_bytes(),
        private_key=client_key_file.read_bytes() if client_key_file else None,
        certificate_chain=client_cert_file.read_bytes() if client_cert_file else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
