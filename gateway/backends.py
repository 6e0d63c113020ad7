"""The gateway's gRPC side: one channel per service, each call given the request's deadline,
and retried where its proto declares it safe to repeat (shared.retries, bounded by that
deadline).

Client-streaming uploads go over a blocking channel, from a worker thread: when a server
ends such a call early (a refusal), grpc.aio may replace the server's status with
`INTERNAL: Internal error from Core` if a write was still under way (grpc/grpc#36066),
while the blocking API reports the server's own status."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import aiohttp
import grpc
from opentelemetry.instrumentation.grpc import client_interceptor, grpcext

from gateway.forward import inference_session
from gateway.settings import GatewaySettings
from shared.channels import channel_target, peer_channel
from shared.retries import retry_idempotent
from shared.telemetry import Telemetry
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2_grpc
from tfmesh.training.v1 import training_pb2_grpc

T = TypeVar("T")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


# The caller's `Authorization` header, passed on to the services with each call it makes,
# so they authorize the caller itself (set per request by gateway.app).
FORWARDED_AUTHORIZATION: ContextVar[str] = ContextVar("forwarded_authorization", default="")


class ForwardingAuthorization(grpc.StreamUnaryClientInterceptor):
    """The same, for the blocking channel's client-streaming uploads."""

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        value = FORWARDED_AUTHORIZATION.get()
        if value:
            metadata = [
                (k, v) for k, v in (client_call_details.metadata or ()) if k != "authorization"
            ]
            client_call_details = _CallDetails(
                client_call_details.method,
                client_call_details.timeout,
                [*metadata, ("authorization", value)],
                client_call_details.credentials,
                client_call_details.wait_for_ready,
                client_call_details.compression,
            )
        return continuation(client_call_details, request_iterator)


class _CallDetails(
    namedtuple(
        "_CallDetails",
        ["method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"],
    ),
    grpc.ClientCallDetails,
):
    pass


class Backends:
    def __init__(self, settings: GatewaySettings, telemetry: Telemetry | None) -> None:
        self.deadline_s = settings.deadline_s
        self.watch_deadline_s = settings.watch_deadline_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._addresses = {
            "registry": settings.registry_addr,
            "data": settings.data_addr,
            "training": settings.training_addr,
            "inference": settings.inference_addr,
        }
        self._telemetry = telemetry
        self._settings = settings
        self._tls = settings.tls_files()
        self._blocking_channels: dict[str, grpc.Channel] = {}
        self.inference_http_base = f"{self._tls.scheme()}://{settings.inference_http_addr}"
        self._inference_http: aiohttp.ClientSession | None = None

    @property
    def inference_http(self) -> aiohttp.ClientSession:
        """The keep-alive pool to the inference service's REST port, opened on first use."""
        if self._inference_http is None:
            self._inference_http = inference_session(self.deadline_s, self._tls.client_context())
        return self._inference_http

    def channel(self, service: str) -> grpc.aio.Channel:
        """The channel to `service`, opened on first use (peers may start after us)."""
        if service not in self._channels:
            self._channels[service] = peer_channel(
                service,
                self._addresses[service],
                self._settings,
                self._telemetry,
                authorization=FORWARDED_AUTHORIZATION.get,
            )
        return self._channels[service]

    def blocking_channel(self, service: str) -> grpc.Channel:
        """A blocking channel to `service` (traced like the others), opened on first use."""
        if service not in self._blocking_channels:
            target, balancing = channel_target(self._addresses[service])
            options = [
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                *balancing,
            ]
            credentials = self._tls.channel_credentials()
            channel = (
                grpc.secure_channel(target, credentials, options=options)
                if credentials
                else grpc.insecure_channel(target, options=options)
            )
            channel = grpc.intercept_channel(channel, ForwardingAuthorization())
            if self._telemetry is not None:
                tracing = client_interceptor(tracer_provider=self._telemetry.tracer_provider)
                channel = grpcext.intercept_channel(channel, tracing)
            self._blocking_channels[service] = channel
        return self._blocking_channels[service]

    @property
    def registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.channel("registry"))

    @property
    def data(self) -> data_pb2_grpc.DataServiceStub:
        return data_pb2_grpc.DataServiceStub(self.channel("data"))

    @property
    def data_uploads(self) -> data_pb2_grpc.DataServiceStub:
        """The data service over the blocking channel, for `UploadDataset` (see above)."""
        return data_pb2_grpc.DataServiceStub(self.blocking_channel("data"))

    @property
    def training(self) -> training_pb2_grpc.TrainingServiceStub:
        return training_pb2_grpc.TrainingServiceStub(self.channel("training"))

    @property
    def inference(self) -> inference_pb2_grpc.InferenceServiceStub:
        return inference_pb2_grpc.InferenceServiceStub(self.channel("inference"))

    async def call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """A call within the request's deadline; the channel retries it where its proto
        declares it safe to repeat (shared.retries)."""
        return await method(request, timeout=self.deadline_s)

    async def call_keyed(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """A call that its request makes safe to repeat (a client-chosen id): retried on
        transient codes until the deadline, as a declared one is."""
        return await retry_idempotent(
            lambda timeout: method(request, timeout=timeout), deadline_s=self.deadline_s
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        for blocking in self._blocking_channels.values():
            blocking.close()
        self._blocking_channels.clear()
        if self._inference_http is not None:
            await self._inference_http.close()
            self._inference_http = None
