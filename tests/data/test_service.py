"""The data service over gRPC: a real grpc.aio server on loopback, called as a client would."""

from __future__ import annotations

import asyncio
import io

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.data.server import start_data
from services.data.settings import DataSettings
from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from shared.blobstore import LocalBlobStore
from shared.channels import open_channel
from shared.ports import free_port
from shared.telemetry import setup_telemetry
from shared.tensors import from_tensor
from tests.data.conftest import (
    images,
    numeric_table,
    stored_files,
    upload,
    upload_requests,
)
from tests.support.registry import registry_settings, running_registry
from tests.support.status import expect_error, violation_list
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.registry.v1 import registry_pb2, registry_pb2_grpc

CSV = pb.DATA_FORMAT_CSV
NPZ = pb.DATA_FORMAT_NPZ


async def read_split(stub, version: str, split, batch_size: int = 50):
    features, labels = [], []
    first_rows = []
    async for batch in stub.ReadBatches(
        pb.ReadBatchesRequest(version=version, split=split, batch_size=batch_size)
    ):
        first_rows.append(batch.first_row)
        features.append(from_tensor(batch.features, "features"))
        labels.append(from_tensor(batch.labels, "labels"))
    return features, labels, first_rows


async def nothing_stored(stub, settings: DataSettings) -> bool:
    listed = await stub.ListDatasetVersions(pb.ListDatasetVersionsRequest())
    return (
        not listed.versions and stored_files(LocalBlobStore(settings.home / "data" / "blobs")) == []
    )


async def test_csv_upload_describe_read_back(stub):
    x, y, content = numeric_table(600, features=3, classes=4, seed=11)
    response = await upload(stub, content, dataset="tabular")
    version = response.version
    assert response.created and version.name.startswith("tabular@")
    assert version.format == CSV and list(version.schema.feature_shape) == [3]
    assert version.rows.total == version.rows.kept == 600
    fetched = await stub.GetDatasetVersion(pb.GetDatasetVersionRequest(version=version.name))
    assert fetched.version == version
    statistics = await stub.GetStatistics(pb.GetStatisticsRequest(version=version.name))
    assert [f.type for f in statistics.features] == [pb.FEATURE_TYPE_FLOAT] * 3
    assert statistics.features[1].mean == pytest.approx(x[:, 1].mean(), rel=1e-12)
    assert statistics.features[1].std == pytest.approx(x[:, 1].std(), rel=1e-12)
    assert [c.count for c in statistics.labels] == np.bincount(y).tolist()
    assert len(statistics.normalization.mean) == 3
    rows = []
    for split, expected in (
        (pb.SPLIT_TRAIN, version.rows.train),
        (pb.SPLIT_VALIDATION, version.rows.validation),
        (pb.SPLIT_TEST, version.rows.test),
    ):
        features, labels, first_rows = await read_split(stub, version.name, split)
        assert first_rows == list(range(0, expected, 50))
        assert all(f.dtype == np.float32 and f.shape[1:] == (3,) for f in features)
        assert all(label.dtype == np.int64 for label in labels)
        rows += [
            (*f, label)
            for f, label in zip(
                np.concatenate(features).tolist(), np.concatenate(labels).tolist(), strict=True
            )
        ]
    assert sorted(rows) == sorted(
        (*f, int(label)) for f, label in zip(x.astype(np.float32).tolist(), y, strict=True)
    )


async def test_npz_upload_and_shards_by_reference(stub):
    x, y, content = images(120, seed=4)
    response = await upload(stub, content, dataset="pictures", format=NPZ)
    version = response.version
    assert list(version.schema.feature_shape) == [6, 5, 2] and version.schema.label == "y"
    shards = await stub.GetShards(pb.GetShardsRequest(version=version.name))
    assert list(shards.feature_shape) == [6, 5, 2]
    assert shards.record_bytes == 6 * 5 * 2 * 4 + 8
    assert sum(s.rows for s in shards.shards) == 120
    train = await stub.GetShards(pb.GetShardsRequest(version=version.name, split=pb.SPLIT_TRAIN))
    assert {s.split for s in train.shards} == {pb.SPLIT_TRAIN}
    assert [s.index for s in train.shards] == list(range(len(train.shards)))
    records = np.concatenate(
        [np.load(s.uri.removeprefix("file://"), mmap_mode="r")[:] for s in train.shards]
    )
    features, labels, _ = await read_split(stub, version.name, pb.SPLIT_TRAIN)
    assert np.array_equal(records["x"], np.concatenate(features))
    assert np.array_equal(records["y"], np.concatenate(labels))


async def test_identical_upload_returns_the_existing_version(stub):
    _, _, content = numeric_table(100)
    first = await upload(stub, content)
    second = await upload(stub, content)
    assert first.created and not second.created
    assert second.version == first.version


async def test_samples_import_by_name(stub):
    for sample, shape in (
        ("digits", [8, 8, 1]),
        ("iris", [4]),
        ("wine", [13]),
        ("breast_cancer", [30]),
    ):
        response = await stub.ImportSample(pb.ImportSampleRequest(sample=sample))
        assert response.created and response.version.dataset == sample
        assert list(response.version.schema.feature_shape) == shape
    again = await stub.ImportSample(pb.ImportSampleRequest(sample="iris", dataset="flowers"))
    assert again.created and again.version.name.startswith("flowers@")
    again = await stub.ImportSample(pb.ImportSampleRequest(sample="iris", dataset="flowers"))
    assert not again.created
    error = await expect_error(
        stub.ImportSample(pb.ImportSampleRequest(sample="mnist")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violation_list(error)[0][0] == "sample"


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


GOOD_CSV = b"a,b,label\n1,2,x\n3,4,y\n"
HEADER = {"dataset": "bad", "format": CSV, "label_column": "label"}
BAD_UPLOADS = {
    "unspecified format": (
        {**HEADER, "format": pb.DATA_FORMAT_UNSPECIFIED},
        GOOD_CSV,
        "header.format",
    ),
    "unknown format": ({**HEADER, "format": 7}, GOOD_CSV, "header.format"),
    "no label column": ({**HEADER, "label_column": ""}, GOOD_CSV, "header.label_column"),
    "label column not in csv": (
        {**HEADER, "label_column": "target"},
        GOOD_CSV,
        "header.label_column",
    ),
    "ragged rows": (HEADER, b"a,b,label\n1,2,x\n3,y\n5,6,x\n", "chunk"),
    "npz x/y lengths": (
        {**HEADER, "format": NPZ, "label_column": ""},
        npz(x=np.zeros((4, 2)), y=np.zeros(3)),
        "chunk",
    ),
    "name with slash": ({**HEADER, "dataset": "a/b"}, GOOD_CSV, "header.dataset"),
    "name with dots": ({**HEADER, "dataset": "a..b"}, GOOD_CSV, "header.dataset"),
    "empty name": ({**HEADER, "dataset": ""}, GOOD_CSV, "header.dataset"),
    "name starts with dash": ({**HEADER, "dataset": "-x"}, GOOD_CSV, "header.dataset"),
    "ratios not summing to 1": (
        {**HEADER, "split_ratios": pb.SplitRatios(train=0.7, validation=0.1, test=0.1)},
        GOOD_CSV,
        "header.split_ratios",
    ),
    "negative fraction": (
        {**HEADER, "max_bad_row_fraction": -0.1},
        GOOD_CSV,
        "header.max_bad_row_fraction",
    ),
    "unknown reference": (
        {**HEADER, "reference_version": "bad@0123456789ab"},
        GOOD_CSV,
        "header.reference_version",
    ),
    "too many bad rows": (HEADER, b"a,b,label\n1,2,x\n3,,y\n", "header.max_bad_row_fraction"),
    "no content": (HEADER, b"", "chunk"),
    "not utf-8": (HEADER, b"a,b,label\n1,2,\xff\n", "chunk"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
async def test_bad_uploads_are_invalid_argument_and_store_nothing(
    stub, refused_upload, settings, case
):
    header, content, field = BAD_UPLOADS[case]
    error = await refused_upload(upload_requests(pb.UploadHeader(**header), content, 7))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in [f for f, _ in violation_list(error)], violation_list(error)
    assert await nothing_stored(stub, settings)
    assert (await upload(stub, GOOD_CSV)).created, "the server keeps serving"


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([pb.UploadDatasetRequest(chunk=GOOD_CSV)], "chunk"),
        (
            [
                pb.UploadDatasetRequest(header=pb.UploadHeader(**HEADER)),
                pb.UploadDatasetRequest(chunk=GOOD_CSV),
                pb.UploadDatasetRequest(header=pb.UploadHeader(**HEADER)),
            ],
            "header",
        ),
        (
            [pb.UploadDatasetRequest(header=pb.UploadHeader(**HEADER)), pb.UploadDatasetRequest()],
            "part",
        ),
        ([], "header"),
    ],
    ids=["chunk before header", "header twice", "empty message", "no header"],
)
async def test_misordered_streams_are_invalid_argument(
    stub, refused_upload, settings, messages, field
):
    error = await refused_upload(messages)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert [f for f, _ in violation_list(error)] == [field]
    assert await nothing_stored(stub, settings)


async def test_bad_read_requests(stub):
    version = (await upload(stub, GOOD_CSV)).version.name
    cases = [
        (pb.ReadBatchesRequest(version=version), grpc.StatusCode.INVALID_ARGUMENT, "split"),
        (
            pb.ReadBatchesRequest(version=version, split=pb.SPLIT_TRAIN, batch_size=10**9),
            grpc.StatusCode.INVALID_ARGUMENT,
            "batch_size",
        ),
        (
            pb.ReadBatchesRequest(version="bad version", split=pb.SPLIT_TRAIN),
            grpc.StatusCode.INVALID_ARGUMENT,
            "version",
        ),
        (
            pb.ReadBatchesRequest(version="bad@0123456789ab", split=pb.SPLIT_TRAIN),
            grpc.StatusCode.NOT_FOUND,
            "version",
        ),
    ]
    for request, code, field in cases:
        call = stub.ReadBatches(request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() == code
        assert [f for f, _ in violation_list(caught.value)] == [field]
    error = await expect_error(
        stub.ListDatasetVersions(pb.ListDatasetVersionsRequest(page_token="nonsense")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violation_list(error)[0][0] == "page_token"


async def test_list_paginates(stub):
    names = []
    for seed in range(3):
        _, _, content = numeric_table(30, seed=seed)
        names.append((await upload(stub, content)).version.name)
    listed, token = [], ""
    while True:
        page = await stub.ListDatasetVersions(
            pb.ListDatasetVersionsRequest(page_size=2, page_token=token)
        )
        listed += [v.name for v in page.versions]
        if not (token := page.next_page_token):
            break
    assert listed == names[::-1]


async def test_delete_without_registry_is_soft_and_reupload_restores(stub):
    _, _, content = numeric_table(50)
    version = (await upload(stub, content)).version
    deleted = await stub.DeleteDatasetVersion(pb.DeleteDatasetVersionRequest(version=version.name))
    assert deleted.content_kept
    await expect_error(
        stub.GetDatasetVersion(pb.GetDatasetVersionRequest(version=version.name)),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stub.DeleteDatasetVersion(pb.DeleteDatasetVersionRequest(version=version.name)),
        grpc.StatusCode.NOT_FOUND,
    )
    restored = await upload(stub, content)
    assert restored.created and restored.version == version


class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """Only ListVersions, searching lineage across models as the real registry does: it pins
    the contract the data service relies on and records the requests it got (the real
    registry is exercised by test_delete_against_the_real_registry)."""

    def __init__(self) -> None:
        self.lineage: dict[str, registry_pb2.ModelVersion] = {}
        self.requests: list[registry_pb2.ListVersionsRequest] = []

    async def ListVersions(self, request, context):
        self.requests.append(request)
        found = self.lineage.get(request.dataset_version)
        return registry_pb2.ListVersionsResponse(versions=[found] if found else [])


@pytest.fixture
async def fake_registry():
    fake = FakeRegistry()
    server = grpc.aio.server()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield fake, f"127.0.0.1:{port}"
    await server.stop(0)


async def serve_with_registry(settings: DataSettings, registry_addr: str):
    checked = settings.model_copy(
        update={"registry_addr": registry_addr, "registry_deadline_s": 1.0}
    )
    return await start_data(checked, setup_telemetry("data-test", configure_logging=False))


async def test_delete_asks_the_registry_and_refuses_versions_in_a_lineage(settings, fake_registry):
    fake, address = fake_registry
    running = await serve_with_registry(settings, address)
    try:
        async with open_channel(running.address) as channel:
            stub = data_pb2_grpc.DataServiceStub(channel)
            _, _, used_content = numeric_table(40, seed=1)
            _, _, free_content = numeric_table(40, seed=2)
            used = (await upload(stub, used_content)).version.name
            free = (await upload(stub, free_content)).version.name
            fake.lineage[used] = registry_pb2.ModelVersion(model="iris-mlp", version=2)
            error = await expect_error(
                stub.DeleteDatasetVersion(pb.DeleteDatasetVersionRequest(version=used)),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
            assert "iris-mlp version 2" in error.details()
            assert (await stub.GetDatasetVersion(pb.GetDatasetVersionRequest(version=used))).version
            deleted = await stub.DeleteDatasetVersion(pb.DeleteDatasetVersionRequest(version=free))
            assert not deleted.content_kept
            await expect_error(
                stub.GetDatasetVersion(pb.GetDatasetVersionRequest(version=free)),
                grpc.StatusCode.NOT_FOUND,
            )
            assert [(r.model, r.dataset_version, r.page_size) for r in fake.requests] == [
                ("", used, 1),
                ("", free, 1),
            ]
    finally:
        await running.stop(0)


async def test_delete_is_refused_while_the_registry_cannot_answer(settings):
    running = await serve_with_registry(settings, f"127.0.0.1:{free_port()}")
    try:
        async with open_channel(running.address) as channel:
            stub = data_pb2_grpc.DataServiceStub(channel)
            version = (await upload(stub, GOOD_CSV)).version.name
            error = await expect_error(
                stub.DeleteDatasetVersion(pb.DeleteDatasetVersionRequest(version=version)),
                grpc.StatusCode.UNAVAILABLE,
            )
            assert "nothing was deleted" in error.details()
            assert (
                await stub.GetDatasetVersion(pb.GetDatasetVersionRequest(version=version))
            ).version
    finally:
        await running.stop(0)


async def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="tfmesh.data.v1.DataService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for answer in reflection.ServerReflectionInfo(ask()):
        names = [s.name for s in answer.list_services_response.service]
        assert "tfmesh.data.v1.DataService" in names


async def test_concurrent_identical_uploads_make_one_version(stub, settings):
    _, _, content = numeric_table(400, seed=9)
    responses = await asyncio.gather(*(upload(stub, content) for _ in range(3)))
    assert len({r.version.name for r in responses}) == 1
    assert sorted(r.created for r in responses) == [False, False, True]
    listed = await stub.ListDatasetVersions(pb.ListDatasetVersionsRequest())
    assert len(listed.versions) == 1
    features, _, _ = await read_split(stub, listed.versions[0].name, pb.SPLIT_TRAIN)
    assert sum(len(f) for f in features) == listed.versions[0].rows.train


async def test_delete_against_the_real_registry(settings, tmp_path):
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    async with running_registry(registry_settings(tmp_path / "registry-home")) as registry:
        running = await serve_with_registry(settings, registry.address)
        try:
            async with (
                open_channel(running.address) as channel,
                open_channel(registry.address) as registry_channel,
            ):
                stub = data_pb2_grpc.DataServiceStub(channel)
                used = (await stub.ImportSample(pb.ImportSampleRequest(sample="iris"))).version
                free = (await stub.ImportSample(pb.ImportSampleRequest(sample="wine"))).version
                await RegistryClient(registry_channel).upload_version(
                    NewVersion(
                        "iris-mlp",
                        [ArtifactFile("model.bin", artifact)],
                        lineage=registry_pb2.Lineage(dataset_version=used.name),
                    )
                )
                error = await expect_error(
                    stub.DeleteDatasetVersion(pb.DeleteDatasetVersionRequest(version=used.name)),
                    grpc.StatusCode.FAILED_PRECONDITION,
                )
                assert "iris-mlp version 1" in error.details()
                deleted = await stub.DeleteDatasetVersion(
                    pb.DeleteDatasetVersionRequest(version=free.name)
                )
                assert not deleted.content_kept
        finally:
            await running.stop(0)
