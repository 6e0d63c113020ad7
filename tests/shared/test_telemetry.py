"""`shared.telemetry` and `shared.channels`: one trace across a real client and server, with
gRPC attributes on both spans, and JSON log lines that carry the current trace id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, get_current_span

from shared.channels import open_channel
from shared.errors import invalid
from shared.telemetry import Telemetry, setup_telemetry
from tests.shared.conftest import StartServer
from tests.support.probe import (
    PROBE_SERVICE,
    SERVING,
    Request,
    Response,
    register_probe,
    unary_method,
)

log = logging.getLogger("tfmesh.tests.telemetry")


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    """setup_logging replaces the root logger's handlers; give them back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Traced:
    """A Telemetry with its own in-memory exporter."""

    def __init__(self, service_name: str) -> None:
        self.exporter = InMemorySpanExporter()
        self.telemetry: Telemetry = setup_telemetry(
            service_name, exporters=[self.exporter], configure_logging=False
        )

    def spans(self, kind: SpanKind) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.kind == kind]


async def echo(request: Request, context: grpc.aio.ServicerContext) -> Response:
    log.info("handling echo", extra={"request_service": request.service})
    return Response(status=SERVING)


async def reject(request: Request, context: grpc.aio.ServicerContext) -> Response:
    raise invalid("service", "rejected on purpose")


def assert_rpc_attributes(span: ReadableSpan, method: str) -> None:
    assert span.attributes is not None
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == PROBE_SERVICE
    assert span.attributes["rpc.method"] == method


async def test_client_and_server_spans_share_one_trace(serve: StartServer) -> None:
    server, client = Traced("server-under-test"), Traced("client-under-test")
    running = await serve(
        register_probe(unary={"Echo": echo}), [PROBE_SERVICE], server_telemetry=server.telemetry
    )
    async with open_channel(running.address, client.telemetry) as channel:
        await unary_method(channel, "Echo")(Request(service="trace-me"), timeout=5)

    [client_span] = client.spans(SpanKind.CLIENT)
    [server_span] = server.spans(SpanKind.SERVER)
    assert server_span.context.trace_id == client_span.context.trace_id
    assert server_span.parent is not None
    assert server_span.parent.span_id == client_span.context.span_id
    assert server_span.parent.is_remote
    assert_rpc_attributes(client_span, "Echo")
    assert_rpc_attributes(server_span, "Echo")
    assert client_span.resource.attributes["service.name"] == "client-under-test"
    assert server_span.resource.attributes["service.name"] == "server-under-test"


async def test_failed_call_records_its_status_code(serve: StartServer) -> None:
    server, client = Traced("server-under-test"), Traced("client-under-test")
    running = await serve(
        register_probe(unary={"Reject": reject}), [PROBE_SERVICE], server_telemetry=server.telemetry
    )
    async with open_channel(running.address, client.telemetry) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await unary_method(channel, "Reject")(Request(), timeout=5)
    [server_span] = server.spans(SpanKind.SERVER)
    [client_span] = client.spans(SpanKind.CLIENT)
    invalid_argument = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert server_span.attributes is not None and client_span.attributes is not None
    assert server_span.attributes["rpc.grpc.status_code"] == invalid_argument
    assert client_span.attributes["rpc.grpc.status_code"] == invalid_argument
    assert server_span.context.trace_id == client_span.context.trace_id


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("restore_root_logging")
def test_log_lines_are_json_with_the_current_trace(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = setup_telemetry("logging-under-test", exporters=[InMemorySpanExporter()])
    with telemetry.tracer("tests").start_as_current_span("work") as span:
        log.info("inside a span", extra={"model": "iris"})
    log.warning("outside any span")

    inside, outside = json_lines(capsys.readouterr().err)
    context = span.get_span_context()
    assert inside["message"] == "inside a span"
    assert inside["level"] == "INFO"
    assert inside["service"] == "logging-under-test"
    assert inside["model"] == "iris"
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert outside["level"] == "WARNING"
    assert outside["trace_id"] is None and outside["span_id"] is None


@pytest.mark.usefixtures("restore_root_logging")
async def test_server_log_lines_carry_the_callers_trace(
    serve: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = setup_telemetry("server-under-test", exporters=[InMemorySpanExporter()])
    client = Traced("client-under-test")
    running = await serve(
        register_probe(unary={"Echo": echo}), [PROBE_SERVICE], server_telemetry=server
    )
    async with open_channel(running.address, client.telemetry) as channel:
        await unary_method(channel, "Echo")(Request(service="from-client"), timeout=5)

    [client_span] = client.spans(SpanKind.CLIENT)
    handled = [
        line for line in json_lines(capsys.readouterr().err) if line["message"] == "handling echo"
    ]
    assert len(handled) == 1
    assert handled[0]["trace_id"] == format(client_span.context.trace_id, "032x")
    assert handled[0]["request_service"] == "from-client"
    assert not get_current_span().get_span_context().is_valid
