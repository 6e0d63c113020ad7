"""How the CLI reaches the services: each service's address from `TFMESH_<SERVICE>_ADDR`
(defaulting to the local stack's ports), one asyncio gRPC interaction per command, and a
failed call turned into its status code and message on stderr with exit code 1."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import grpc
import typer

from cli.output import errors
from cli.stack import LocalStack, built_services, stack_authorization, stack_tls
from shared.channels import channel_target, open_channel
from shared.settings import default_home

T = TypeVar("T")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# Deadline of each one-shot call; streams (uploads, watches) set their own.
CALL_TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def address(service: str) -> str:
    """Where the command reaches `service`: `TFMESH_<SERVICE>_ADDR`, else the local stack,
    every replica of it while the stack runs in its scaled shape (calls spread over them)."""
    configured = os.environ.get(f"TFMESH_{service.upper()}_ADDR")
    if configured:
        return configured
    scaled = LocalStack(default_home()).is_scaled()
    replicas = [
        spec
        for spec in built_services(scaled)
        if spec.service == service and spec.port_variable == "PORT"
    ]
    return ",".join(spec.address for spec in replicas)


def fail(error: grpc.RpcError) -> typer.Exit:
    """Print a failed call's code and message; the caller raises the returned Exit."""
    call: grpc.Call = error  # type: ignore[assignment]
    errors.print(f"[red]{call.code().name}[/red]: {call.details()}")
    return typer.Exit(1)


def run_rpc(service: str, call: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
    """Run one async gRPC interaction; a failure becomes a message and exit code 1."""

    async def go() -> T:
        home = default_home()
        async with open_channel(
            address(service), tls=stack_tls(home), authorization=stack_authorization(home)
        ) as channel:
            return await call(channel)

    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as error:
        raise fail(error) from None


def call_metadata() -> tuple[tuple[str, str], ...]:
    """The `authorization` metadata of a blocking call (the asyncio channels add it)."""
    authorization = stack_authorization(default_home())
    return (("authorization", authorization()),) if authorization else ()


def blocking_channel(service: str) -> grpc.Channel:
    """A blocking channel, for client-streaming uploads (see gateway.backends on why)."""
    target, balancing = channel_target(address(service))
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *balancing,
    ]
    credentials = stack_tls(default_home()).channel_credentials()
    if credentials is not None:
        return grpc.secure_channel(target, credentials, options=options)
    return grpc.insecure_channel(target, options=options)
