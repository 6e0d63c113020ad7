"""W3C trace context through the gateway: an incoming `traceparent` continues into the
gRPC calls (asyncio ones, and the blocking upload), so the backends' server spans belong
to the HTTP caller's trace."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import create_app
from gateway.backends import Backends
from gateway.settings import GatewaySettings
from services.data.server import start_data
from services.data.settings import DataSettings
from services.registry.server import start_registry
from shared.telemetry import setup_telemetry
from tests.gateway.conftest import asgi_client
from tests.support.registry import registry_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"}


def one(spans: list[ReadableSpan], kind: SpanKind, method: str) -> ReadableSpan:
    matching = [s for s in spans if s.kind is kind and s.name.endswith(f"/{method}")]
    assert len(matching) == 1, [s.name for s in spans]
    return matching[0]


def trace_id(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


async def test_traceparent_continues_into_the_backend_calls(tmp_path):
    backend_spans = InMemorySpanExporter()
    gateway_spans = InMemorySpanExporter()
    backend = setup_telemetry(
        "backend-trace-test", exporters=[backend_spans], configure_logging=False
    )
    registry = await start_registry(registry_settings(tmp_path / "registry"), backend)
    data = await start_data(DataSettings(home=tmp_path / "data", port=0), backend)
    try:
        settings = GatewaySettings(
            registry_addr=registry.address, data_addr=data.address, deadline_s=5
        )
        telemetry = setup_telemetry(
            "gateway-trace-test", exporters=[gateway_spans], configure_logging=False
        )
        app = create_app(settings, Backends(settings, telemetry), telemetry)
        async with asgi_client(app) as client:
            missing = await client.get("/api/v1/models/nope", headers=TRACEPARENT)
            upload = await client.post(
                "/api/v1/datasets/people/versions",
                params={"format": "csv", "label_column": "kind"},
                content=b"height,kind\n1.6,short\n1.9,tall\n1.7,tall\n1.5,short\n",
                headers=TRACEPARENT,
            )
            untraced = await client.get("/api/v1/models")
        assert missing.status_code == 404 and untraced.status_code == 200
        assert upload.status_code == 201, upload.text
    finally:
        await data.stop(0)
        await registry.stop(0)
    served = backend_spans.get_finished_spans()
    sent = gateway_spans.get_finished_spans()
    for method in ("GetModel", "UploadDataset"):
        server_span = one(served, SpanKind.SERVER, method)
        client_span = one(sent, SpanKind.CLIENT, method)
        assert trace_id(server_span) == TRACE_ID
        assert server_span.parent is not None
        assert server_span.parent.span_id == client_span.context.span_id
    http = [s for s in sent if s.kind is SpanKind.SERVER and trace_id(s) == TRACE_ID]
    assert http and all(format(s.parent.span_id, "016x") == CALLER_SPAN_ID for s in http)
    assert trace_id(one(sent, SpanKind.CLIENT, "ListModels")) != TRACE_ID
