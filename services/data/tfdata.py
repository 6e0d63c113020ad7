"""A `tf.data.Dataset` over a dataset version's shards, for readers on the service's disk.

Usage (the training service):

    shards = await data_stub.GetShards(GetShardsRequest(version=v, split=SPLIT_TRAIN))
    train = dataset_from_shards(shards, SPLIT_TRAIN, batch_size=64, shuffle_buffer=10_000)
    model.fit(train, ...)

Each shard is read by `FixedLengthRecordDataset` past its npy header, so no Python runs
per example; records are decoded after batching, one `decode_raw` per batch. Without
shuffling, rows come in the order `ReadBatches` streams them. TensorFlow is imported
by the function, never by the data service itself."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from shared.errors import DataLoss
from tfmesh.data.v1 import data_pb2

if TYPE_CHECKING:
    import tensorflow as tf

LABEL_BYTES = 8
_HASH_BLOCK = 1024 * 1024


def local_path(uri: str) -> Path:
    """The file a `file://` shard URI names; other schemes need ReadBatches instead."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"shard {uri!r} is not a local file; read it with ReadBatches")
    return Path(unquote(parsed.path))


def _check_digest(path: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise DataLoss(f"shard {path} hashes to {digest.hexdigest()}, expected {sha256}")


def dataset_from_shards(
    shards: data_pb2.GetShardsResponse,
    split: data_pb2.Split.ValueType,
    *,
    batch_size: int | None = None,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    verify_digests: bool = True,
) -> tf.data.Dataset:
    """(features float32 [batch] + feature_shape, labels int64 [batch]) of one split.

    `verify_digests` hashes every shard file first (DataLoss on a mismatch)."""
    import tensorflow as tf

    if any(s.format == data_pb2.SHARD_FORMAT_PARQUET for s in shards.shards):
        raise ValueError("these are Parquet files: ask GetShards for the .npy shards")
    chosen = sorted((s for s in shards.shards if s.split == split), key=lambda s: s.index)
    paths = [local_path(shard.uri) for shard in chosen]
    if verify_digests:
        for path, shard in zip(paths, chosen, strict=True):
            _check_digest(path, shard.sha256)
    record_bytes = shards.record_bytes
    feature_bytes = record_bytes - LABEL_BYTES
    feature_shape = tf.constant(list(shards.feature_shape), dtype=tf.int32)
    files = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([str(path) for path in paths], dtype=tf.string),
            tf.constant([shard.header_bytes for shard in chosen], dtype=tf.int64),
        )
    )
    records = files.flat_map(
        lambda path, header_bytes: tf.data.FixedLengthRecordDataset(
            path, record_bytes, header_bytes=header_bytes
        )
    )
    if shuffle_buffer:
        records = records.shuffle(shuffle_buffer, seed=seed)
    if batch_size:
        records = records.batch(batch_size)

    def decode(raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.decode_raw(tf.strings.substr(raw, 0, feature_bytes), tf.float32)
        labels = tf.io.decode_raw(tf.strings.substr(raw, feature_bytes, LABEL_BYTES), tf.int64)
        outer = tf.shape(raw)
        features = tf.reshape(features, tf.concat([outer, feature_shape], axis=0))
        return features, tf.reshape(labels, outer)

    return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
