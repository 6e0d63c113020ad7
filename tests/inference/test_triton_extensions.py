"""Triton's extensions beside KServe v2 on a real grpc.aio server, in both server shapes:
ModelConfig, ModelStatistics with exact counts, ModelStreamInfer with many requests in
flight on one stream, and bad input to each (unknown models, a malformed stream message,
a stream that never reads its answers), after which the server still serves."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc
from inference import model_config_pb2 as mc
from services.inference.server import start_inference
from services.inference.settings import InferenceSettings
from shared.channels import open_channel
from shared.telemetry import setup_telemetry
from tests.inference.conftest import start_server_in_process
from tests.inference.models import FEATURES, digits_rows


@pytest.fixture
def kserve(channel) -> grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub:
    return grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer_request(rows: np.ndarray, request_id: str = "", **fields) -> v2.ModelInferRequest:
    return v2.ModelInferRequest(
        model_name=fields.pop("model", "digits"),
        id=request_id,
        inputs=[v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=rows.shape)],
        raw_input_contents=[rows.astype(np.float32).tobytes()],
        **fields,
    )


def output_of(response: v2.ModelInferResponse) -> np.ndarray:
    shape = tuple(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(shape)


async def test_model_config_says_what_perf_analyzer_reads(kserve):
    config = (await kserve.ModelConfig(v2.ModelConfigRequest(name="digits"), timeout=10)).config
    assert config.name == "digits"
    assert config.platform == "tfmesh_tensorflow" and config.backend == "tensorflow"
    assert config.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("x", mc.TYPE_FP32, [FEATURES])
    ]
    assert [(o.data_type, list(o.dims)) for o in config.output] == [(mc.TYPE_FP32, [10])]
    assert list(config.version_policy.specific.versions) == [1, 2]
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [1, 2, 4, 8]
    assert batching.max_queue_delay_microseconds == 1000
    assert batching.default_queue_policy.max_queue_size == 8 * 16
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    slow = (await kserve.ModelConfig(v2.ModelConfigRequest(name="slow"), timeout=10)).config
    assert slow.max_batch_size == 1 and slow.backend == "noop"


async def test_model_config_by_version_and_label_and_of_unknown_models(kserve):
    for version in ("2", "canary"):
        answer = await kserve.ModelConfig(
            v2.ModelConfigRequest(name="digits", version=version), timeout=10
        )
        assert answer.config.name == "digits"
    for request, code in (
        (v2.ModelConfigRequest(name="nope"), grpc.StatusCode.NOT_FOUND),
        (v2.ModelConfigRequest(name="digits", version="9"), grpc.StatusCode.NOT_FOUND),
        (v2.ModelConfigRequest(name="digits", version="0"), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await kserve.ModelConfig(request, timeout=10)
        assert failure.value.code() == code


async def statistics_of(kserve, version: str) -> v2.ModelStatistics:
    answer = await kserve.ModelStatistics(
        v2.ModelStatisticsRequest(name="digits", version=version), timeout=10
    )
    (statistics,) = answer.model_stats
    return statistics


async def test_statistics_count_requests_rows_and_batches(kserve):
    before = await statistics_of(kserve, "1")
    for rows in (1, 3, 20):  # 20 rows run as batches of 8, 8 and 4
        await kserve.ModelInfer(infer_request(digits_rows(rows), model_version="1"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await kserve.ModelInfer(infer_request(np.zeros((1, 3))), timeout=10)
    after = await statistics_of(kserve, "1")
    assert after.inference_count - before.inference_count == 24
    assert after.execution_count - before.execution_count == 5
    stats, old = after.inference_stats, before.inference_stats
    assert stats.success.count - old.success.count == 3
    assert stats.queue.count - old.queue.count == 5
    assert stats.compute_infer.count - old.compute_infer.count == 5
    assert stats.success.ns > old.success.ns
    # A request refused before it reached a version is not the version's failure.
    assert stats.fail.count == old.fail.count
    assert after.last_inference > 0
    assert {b.batch_size for b in after.batch_stats} >= {1, 4, 8}


async def test_statistics_of_every_model_and_of_unknown_ones(kserve):
    everything = await kserve.ModelStatistics(v2.ModelStatisticsRequest(), timeout=10)
    assert {(s.name, s.version) for s in everything.model_stats} == {
        ("digits", "1"),
        ("digits", "2"),
        ("slow", "1"),
    }
    canary = await statistics_of(kserve, "canary")
    assert canary.version == "2"
    for request in (
        v2.ModelStatisticsRequest(name="nope"),
        v2.ModelStatisticsRequest(name="digits", version="7"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await kserve.ModelStatistics(request, timeout=10)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_one_stream_with_many_requests_in_flight_echoes_each_id(kserve):
    rows = digits_rows(64)
    unary = output_of(await kserve.ModelInfer(infer_request(rows), timeout=10))

    async def requests():
        for index in range(64):
            yield infer_request(rows[index : index + 1], f"row-{index}")

    answers = {}
    async for answer in kserve.ModelStreamInfer(requests(), timeout=30):
        assert answer.error_message == ""
        answers[answer.infer_response.id] = output_of(answer.infer_response)
    assert sorted(answers) == sorted(f"row-{index}" for index in range(64))
    streamed = np.concatenate([answers[f"row-{index}"] for index in range(64)])
    np.testing.assert_allclose(streamed, unary, rtol=1e-5, atol=1e-6)


async def test_a_bad_request_on_a_stream_is_answered_with_its_error_and_the_stream_goes_on(
    kserve,
):
    requests = [
        infer_request(digits_rows(1), "good-1"),
        infer_request(digits_rows(1), "no-model", model="nope"),
        infer_request(np.zeros((1, 3)), "bad-shape"),
        infer_request(digits_rows(1), "good-2"),
    ]
    answers = [answer async for answer in kserve.ModelStreamInfer(iter(requests), timeout=30)]
    by_id = {answer.infer_response.id: answer for answer in answers}
    assert set(by_id) == {"good-1", "no-model", "bad-shape", "good-2"}
    assert by_id["good-1"].error_message == by_id["good-2"].error_message == ""
    assert by_id["no-model"].error_message.startswith("NOT_FOUND: model 'nope'")
    assert by_id["bad-shape"].error_message.startswith("INVALID_ARGUMENT: inputs[0]")


async def serves(channel) -> bool:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    await kserve.ModelInfer(infer_request(digits_rows(1)), timeout=5)
    return answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_malformed_stream_message_is_invalid_argument_and_harms_nothing(channel):
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")

    async def garbage():
        yield infer_request(digits_rows(1), "fine").SerializeToString()
        yield b"\xff\xff\xff not a message"

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for _ in call(garbage(), timeout=10):
            pass
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "do not parse" in failure.value.details()
    assert await serves(channel)


@pytest.mark.parametrize("shape", ["single", "split"])
async def test_a_stream_that_never_reads_its_answers_is_held_back(tmp_path, static_config, shape):
    """The server stops reading a stream whose answers pile up unread, so its memory
    stays bounded; other clients are served meanwhile, and the call ends cleanly when
    the client goes."""
    settings = InferenceSettings(
        home=tmp_path,
        port=0,
        http_port=0,
        model_config_file=static_config,
        stream_max_in_flight=8,
    )
    telemetry = setup_telemetry("inference-test", configure_logging=False)
    running = await start_server_in_process(shape, settings, telemetry)
    sent = 0
    # Without BDP probing the client's receive window stays at HTTP/2's initial 64 KiB,
    # so the answers it does not read fill it soon.
    options = [("grpc.http2.bdp_probe", 0)]
    try:
        async with grpc.aio.insecure_channel(running.address, options=options) as channel:
            kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            before = (await statistics_of(kserve, "1")).inference_stats.success.count
            call = kserve.ModelStreamInfer()
            row = infer_request(digits_rows(1), "unread", model_version="1")

            async def write_forever() -> None:
                nonlocal sent
                while True:
                    await call.write(row)
                    sent += 1

            writer = asyncio.create_task(write_forever())

            async def computed() -> int:
                statistics = await statistics_of(kserve, "1")
                return statistics.inference_stats.success.count - before

            # Poll until the count stops moving: the server has stopped reading.
            counts = [await computed()]
            for _ in range(40):
                await asyncio.sleep(0.25)
                counts.append(await computed())
                if len(counts) >= 4 and counts[-1] == counts[-4]:
                    break
            async with open_channel(running.address) as other:
                assert await asyncio.wait_for(serves(other), 5)
            writer.cancel()
            call.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            assert counts[-1] == counts[-4], f"still computing after 10 s: {counts}"
            assert counts[-1] >= 8
            # HTTP/2 flow control held the client back as well, once the server's
            # receive window was full of requests it did not read.
            assert counts[-1] < sent
            assert await serves(channel)
    finally:
        await running.stop(0)


async def test_a_single_process_server_also_lists_the_extensions(tmp_path, static_config):
    settings = InferenceSettings(
        home=tmp_path, port=0, http_port=0, model_config_file=static_config
    )
    running, _ = await start_inference(settings, setup_telemetry("t", configure_logging=False))
    try:
        async with open_channel(running.address) as channel:
            kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            metadata = await kserve.ServerMetadata(v2.ServerMetadataRequest(), timeout=5)
            assert set(metadata.extensions) >= {"model_configuration", "statistics", "streaming"}
    finally:
        await running.stop(0)
