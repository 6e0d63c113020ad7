"""A dataset version's split read straight from the Parquet files the data service stored,
where they lie (a path on this machine, or object storage reached the standard AWS way),
so that training workers do not stream every row through the data service.

`GetShards` (format PARQUET) names each file's URI, digest and row count. Each file is
read whole, checked against its digest, and decoded by pyarrow into the arrays the
trainer takes, the same ones ReadBatches gives: float32 features shaped like one example
(a categorical feature as its index in the schema's vocabulary, an INT feature as its
value) and int64 label indices into the label vocabulary. A file this process cannot
read (not on its disk or not its user's to read: blobs are the data service's user's
only; no access to the bucket) or decode (a layout that does not match) raises
`Unreachable`, one whose content is not its digest `Corrupt`; the caller then reads the
split through the data service."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tfmesh.data.v1 import data_pb2 as pb


class Unreachable(Exception):
    """A version's file that this process cannot read or decode, and why."""


class Corrupt(Unreachable):
    """A version's file whose content is not its digest's: the stored blob is damaged."""


class VersionFiles:
    """Reads files by URI: `file://` paths, and `s3://` objects through one boto3 client
    made on the first (endpoint and credentials from the environment)."""

    def __init__(self) -> None:
        self._s3: Any = None

    def read_split(
        self, files: Sequence[pb.Shard], schema: pb.Schema
    ) -> tuple[np.ndarray, np.ndarray]:
        """The split's features and labels, its files in index order."""
        shape = tuple(int(dim) for dim in schema.feature_shape)
        features, labels = [np.zeros((0, *shape), np.float32)], [np.zeros((0,), np.int64)]
        for file in sorted(files, key=lambda f: f.index):
            table = self._table(file)
            if table.num_rows != file.rows:
                raise Unreachable(f"{file.uri} holds {table.num_rows} rows, not {file.rows}")
            try:
                x, y = decoded(table, schema)
            except Unreachable as error:
                raise Unreachable(f"{file.uri}: {error}") from None
            except (pa.ArrowException, ValueError, KeyError, TypeError) as error:
                raise Unreachable(f"{file.uri} is not in the layout expected: {error}") from None
            features.append(x)
            labels.append(y)
        return np.concatenate(features), np.concatenate(labels)

    def _table(self, file: pb.Shard) -> pa.Table:
        content = self._read(file.uri)
        if hashlib.sha256(content).hexdigest() != file.sha256:
            raise Corrupt(f"{file.uri} does not hold the content of digest {file.sha256}")
        try:
            return pq.read_table(pa.BufferReader(content))
        except (pa.ArrowException, OSError) as error:
            raise Unreachable(f"{file.uri} is not a Parquet file pyarrow reads: {error}") from None

    def _read(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            try:
                return Path(unquote(parsed.path)).read_bytes()
            except OSError as error:
                raise Unreachable(f"{uri} is not readable here: {error}") from None
        if parsed.scheme == "s3":
            return self._read_object(parsed.netloc, parsed.path.lstrip("/"), uri)
        raise Unreachable(f"{uri}: no direct reads from {parsed.scheme or 'a bare path'}")

    def _read_object(self, bucket: str, key: str, uri: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError

        from shared.s3_blobstore import endpoint_from_environment, s3_client

        try:
            if self._s3 is None:
                self._s3 = s3_client(endpoint_from_environment())
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        # ValueError: an endpoint variable boto3 cannot parse.
        except (BotoCoreError, ClientError, HTTPError, OSError, ValueError) as error:
            raise Unreachable(f"{uri} is not readable here: {error}") from None


def decoded(table: pa.Table, schema: pb.Schema) -> tuple[np.ndarray, np.ndarray]:
    """A file's rows as (features, labels), in the layout of services.data.arrow_reads."""
    shape = tuple(int(dim) for dim in schema.feature_shape)
    names = table.column_names
    if schema.label not in names:
        raise Unreachable(f"the file has no label column {schema.label!r}")
    labels = _codes(table.column(schema.label), schema.label_vocabulary, schema.label)
    if len(shape) != 1 or len(schema.features) != shape[0]:
        # Arrays of more than one axis: one `x` column of flattened examples.
        if names != ["x", schema.label]:
            raise Unreachable(f"the file's columns {names} are not an array version's")
        flat = pc.list_flatten(table.column("x")).to_numpy().astype(np.float32, copy=False)
        return flat.reshape((table.num_rows, *shape)), labels.astype(np.int64)
    if names != [f.name for f in schema.features] + [schema.label]:
        raise Unreachable(f"the file's columns {names} are not the schema's")
    features = np.empty((table.num_rows, len(schema.features)), np.float32)
    for j, feature in enumerate(schema.features):
        column = table.column(j)
        if feature.type == pb.FEATURE_TYPE_CATEGORICAL:
            features[:, j] = _codes(column, feature.vocabulary, feature.name)
        else:
            features[:, j] = column.to_numpy()
    return features, labels.astype(np.int64)


def _codes(column: pa.ChunkedArray, vocabulary: Sequence[str], name: str) -> np.ndarray:
    """Each value's index in `vocabulary`, from dictionary chunks of text (each chunk's
    own dictionary mapped once) or plain text; any other type is not the layout."""
    values = pa.array(list(vocabulary), pa.string())
    parts = [np.zeros(0, np.int32)]
    for chunk in column.chunks:
        text = chunk.type.value_type if pa.types.is_dictionary(chunk.type) else chunk.type
        if not (pa.types.is_string(text) or pa.types.is_large_string(text)):
            raise Unreachable(f"column {name!r} is {chunk.type}, not text")
        if pa.types.is_dictionary(chunk.type):
            mapping = pc.index_in(chunk.dictionary.cast(pa.string()), value_set=values)
            codes = pc.take(mapping, chunk.indices)
        else:
            codes = pc.index_in(chunk.cast(pa.string()), value_set=values)
        if codes.null_count:
            raise Unreachable(f"column {name!r} holds a value outside its vocabulary")
        parts.append(codes.to_numpy(zero_copy_only=False))
    return np.concatenate(parts)
