"""The tf.data reader of shards yields exactly what ReadBatches streams, checks digests,
and refuses shards it cannot open locally."""

from __future__ import annotations

import numpy as np
import pytest

from services.data import converters
from services.data.tfdata import dataset_from_shards
from shared.errors import DataLoss
from tests.data.conftest import images, ingest, numeric_table, read_split
from tfmesh.data.v1 import data_pb2 as pb

PROTO_SPLITS = {pb.SPLIT_TRAIN: "train", pb.SPLIT_VALIDATION: "validation", pb.SPLIT_TEST: "test"}


def collect(dataset) -> tuple[np.ndarray, np.ndarray]:
    features, labels = zip(*((f.numpy(), y.numpy()) for f, y in dataset), strict=True)
    return np.concatenate(features), np.concatenate(labels)


@pytest.mark.parametrize("data_format", ["csv", "npz"])
def test_batches_from_shards_equal_read_batches(core, data_format):
    content = numeric_table(700)[2] if data_format == "csv" else images(300)[2]
    version, _ = ingest(core, content, format=data_format)
    response = converters.shards_to_proto(core.shards(version.name, None))
    assert len({s.split for s in response.shards}) == 3
    for split, name in PROTO_SPLITS.items():
        expected_x, expected_y = read_split(core, version.name, converters.split_from_proto(split))
        features, labels = collect(dataset_from_shards(response, split, batch_size=64))
        assert features.dtype == np.float32 and labels.dtype == np.int64, name
        assert features.shape == expected_x.shape, name
        assert np.array_equal(features, expected_x) and np.array_equal(labels, expected_y), name


def test_unbatched_shuffled_examples(core):
    version, _ = ingest(core, images(100)[2], format="npz")
    response = converters.shards_to_proto(core.shards(version.name, None))
    dataset = dataset_from_shards(response, pb.SPLIT_TRAIN, shuffle_buffer=1000, seed=3)
    first_x, first_y = next(iter(dataset))
    assert first_x.shape == (6, 5, 2) and first_y.shape == ()
    expected_x, _ = read_split(core, version.name, converters.split_from_proto(pb.SPLIT_TRAIN))
    shuffled = np.stack([x.numpy() for x, _ in dataset])
    assert not np.array_equal(shuffled, expected_x)
    assert sorted(map(bytes, shuffled)) == sorted(map(bytes, expected_x))


def test_corrupt_shard_and_remote_uri_are_refused(core):
    version, _ = ingest(core, numeric_table(200)[2])
    response = converters.shards_to_proto(core.shards(version.name, None))
    shard = next(s for s in response.shards if s.split == pb.SPLIT_TRAIN)
    path = shard.uri.removeprefix("file://")
    with open(path, "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(DataLoss):
        dataset_from_shards(response, pb.SPLIT_TRAIN)
    shard.uri = "s3://bucket/shard.npy"
    with pytest.raises(ValueError, match="ReadBatches"):
        dataset_from_shards(response, pb.SPLIT_TRAIN, verify_digests=False)
