"""Client channels to tfmesh services: tracing and metrics interceptors, message limits,
optional TLS, and the start-up check that the TLS to each peer works."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.grpc_metrics import client_interceptors
from shared.settings import SettingsError
from shared.telemetry import Telemetry
from shared.tls import TlsFiles, is_handshake_failure


def open_channel(
    target: str,
    telemetry: Telemetry | None = None,
    *,
    max_message_bytes: int = 64 * 1024 * 1024,
    tls: TlsFiles | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to `target`: TLS when `tls` names a CA (mutual when it also names
    this process's certificate). A service's channel (one given its telemetry) is traced
    and its calls counted."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    interceptors = [*telemetry.client_interceptors(), *client_interceptors()] if telemetry else None
    credentials = tls.channel_credentials() if tls else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


async def check_peer_tls(peers: dict[str, str], tls: TlsFiles, timeout_s: float = 3.0) -> None:
    """At start: ask each peer's health once; a TLS failure stops the start with
    SettingsError naming the setting, where a retry loop would hide it. A peer that is
    down (or not up yet) is left to the usual retries."""
    for name, address in peers.items():
        async with open_channel(address, tls=tls) as channel:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as error:
                details = error.details() or ""
                if error.code() == grpc.StatusCode.UNAVAILABLE and is_handshake_failure(details):
                    raise SettingsError(
                        f"TLS to the {name} service at {address} failed: check "
                        "TFMESH_TLS_CA_FILE (the CA that signs its certificate), and under "
                        "mutual TLS TFMESH_TLS_CERT_FILE / TFMESH_TLS_KEY_FILE (this "
                        f"process's certificate, signed by the CA it trusts): {details}"
                    ) from None
