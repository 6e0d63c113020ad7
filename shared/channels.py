"""Client channels to tfmesh services: tracing and metrics interceptors, message limits,
optional TLS, and the start-up check that the TLS to each peer works."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, cast

import consul
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.discovery import BalancedChannel, ConsulWatch
from shared.grpc_metrics import client_interceptors
from shared.retries import RetryingChannel
from shared.settings import SettingsError, TlsSettings
from shared.telemetry import Telemetry
from shared.tls import TlsFiles, is_handshake_failure


def channel_target(address: str) -> tuple[str, list[tuple[str, str]]]:
    """gRPC's target and options for an address: one `host:port` as it is; a list of
    replicas' `ip:port,ip:port` as gRPC's own static resolver (`ipv4:` / `ipv6:`) with
    round-robin balancing, so calls spread over the replicas and skip a dead one."""
    if "," not in address:
        return address, []
    replicas = [part.strip() for part in address.split(",") if part.strip()]
    scheme = "ipv6" if all(part.startswith("[") for part in replicas) else "ipv4"
    config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
    return f"{scheme}:{','.join(replicas)}", [("grpc.service_config", config)]


def open_channel(
    target: str,
    telemetry: Telemetry | None = None,
    *,
    max_message_bytes: int = 64 * 1024 * 1024,
    tls: TlsFiles | None = None,
    authorization: Callable[[], str] | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to `target`: TLS when `tls` names a CA (mutual when it also names
    this process's certificate); every call carries `authorization: <authorization()>`
    when that gives a value (`bearer(token)` for a fixed token). A service's channel (one
    given its telemetry) is traced and its calls counted."""
    target, balancing = channel_target(target)
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *balancing,
    ]
    interceptors: list[grpc.aio.ClientInterceptor] = (
        [*telemetry.client_interceptors(), *client_interceptors()] if telemetry else []
    )
    if authorization is not None:
        interceptors += authorization_interceptors(authorization)
    credentials = tls.channel_credentials() if tls else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors or None)
    return grpc.aio.secure_channel(
        target, credentials, options=options, interceptors=interceptors or None
    )


def peer_channel(
    name: str,
    address: str,
    settings: TlsSettings,
    telemetry: Telemetry | None,
    authorization: Callable[[], str] | None = None,
) -> grpc.aio.Channel:
    """A service's channel to its peer `name`: its TLS files, its own token on every call
    (or `authorization`), at `address`, or over the peer's passing instances in Consul
    when `TFMESH_DISCOVERY=consul` (shared.discovery); calls that their protos declare
    safe to repeat are retried (shared.retries)."""
    credentials = authorization or bearer(getattr(settings, "auth_token", ""))

    def to(target: str) -> grpc.aio.Channel:
        return open_channel(target, telemetry, tls=settings.tls_files(), authorization=credentials)

    # Duck-typed: a generated stub needs only the four multicallable factories.
    if uses_consul():
        watch = ConsulWatch(consul.Consul(), name)
        return cast(grpc.aio.Channel, RetryingChannel(BalancedChannel(watch, to)))
    return cast(grpc.aio.Channel, RetryingChannel(to(address)))


def uses_consul() -> bool:
    return os.environ.get("TFMESH_DISCOVERY", "static") == "consul"


def bearer(token: str) -> Callable[[], str] | None:
    """The `authorization` of a fixed token (None when there is none)."""
    return (lambda: f"Bearer {token}") if token else None


def _with_authorization(details: Any, value: str) -> Any:
    metadata = [(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
    return details._replace(metadata=grpc.aio.Metadata(*metadata, ("authorization", value)))


class _Authorizing:
    def __init__(self, authorization: Callable[[], str]) -> None:
        self._authorization = authorization

    def _details(self, details: Any) -> Any:
        value = self._authorization()
        return _with_authorization(details, value) if value else details


class _UnaryUnaryAuthorizing(_Authorizing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStreamAuthorizing(_Authorizing, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnaryAuthorizing(_Authorizing, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStreamAuthorizing(_Authorizing, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def authorization_interceptors(
    authorization: Callable[[], str],
) -> list[grpc.aio.ClientInterceptor]:
    return [
        cls(authorization)
        for cls in (
            _UnaryUnaryAuthorizing,
            _UnaryStreamAuthorizing,
            _StreamUnaryAuthorizing,
            _StreamStreamAuthorizing,
        )
    ]


async def check_peer_tls(peers: dict[str, str], tls: TlsFiles, timeout_s: float = 3.0) -> None:
    """At start: ask each peer's health once; a TLS failure stops the start with
    SettingsError naming the setting, where a retry loop would hide it. A peer that is
    down (or not up yet) is left to the usual retries; peers found in Consul are checked
    by their calls."""
    if uses_consul():
        return
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
