"""A version's split as Apache Arrow record batches, in Arrow's IPC stream format.

Tabular versions (one feature per column, as CSV uploads are) become one column per
feature: FLOAT features as float32, INT features as int64, CATEGORICAL features as
dictionary arrays over their vocabulary (pandas reads them as categoricals). Versions of
arrays (images) become one `x` column of fixed-size lists of float32, the example's shape
in the field's metadata. The label is a dictionary array over the label vocabulary. The
schema's metadata names the version, the split and the feature shape. `ipc_stream`
yields the bytes of one IPC stream piece by piece (schema and first batch, then a batch
at a time, then the end-of-stream marker), so a reader can concatenate them or parse them
as they come."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from services.data.entities import Batch, FeatureKind, Schema, Split

LABEL_INDEX = pa.int32()


def is_tabular(schema: Schema) -> bool:
    """One feature per column: a 1-D example with a named feature per value."""
    shape = schema.feature_shape
    return len(shape) == 1 and len(schema.features) == shape[0]


def _dictionary() -> pa.DataType:
    return pa.dictionary(LABEL_INDEX, pa.string())


def arrow_schema(schema: Schema, version: str, split: Split) -> pa.Schema:
    """The Arrow schema of a version's rows."""
    fields = []
    if is_tabular(schema):
        for feature in schema.features:
            if feature.kind is FeatureKind.CATEGORICAL:
                fields.append(pa.field(feature.name, _dictionary()))
            elif feature.kind is FeatureKind.INT:
                fields.append(pa.field(feature.name, pa.int64()))
            else:
                fields.append(pa.field(feature.name, pa.float32()))
    else:
        shape = json.dumps(schema.feature_shape).encode()
        size = math.prod(schema.feature_shape)
        fields.append(pa.field("x", pa.list_(pa.float32(), size), metadata={b"shape": shape}))
    fields.append(pa.field(schema.label, _dictionary()))
    metadata = {
        b"tfmesh.version": version.encode(),
        b"tfmesh.split": split.value.encode(),
        b"tfmesh.feature_shape": json.dumps(schema.feature_shape).encode(),
    }
    return pa.schema(fields, metadata=metadata)


def _categories(codes: np.ndarray, vocabulary: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32), LABEL_INDEX), pa.array(vocabulary, pa.string())
    )


def record_batch(target: pa.Schema, schema: Schema, batch: Batch) -> pa.RecordBatch:
    """`batch`'s rows as a record batch of `target` (from `arrow_schema`)."""
    columns: list[pa.Array] = []
    features = batch.features
    if is_tabular(schema):
        for j, feature in enumerate(schema.features):
            values = np.ascontiguousarray(features[:, j])
            if feature.kind is FeatureKind.CATEGORICAL:
                columns.append(_categories(values, feature.vocabulary))
            elif feature.kind is FeatureKind.INT:
                columns.append(pa.array(values.astype(np.int64)))
            else:
                columns.append(pa.array(values))
    else:
        flat = pa.array(np.ascontiguousarray(features, dtype=np.float32).reshape(-1))
        columns.append(pa.FixedSizeListArray.from_arrays(flat, math.prod(schema.feature_shape)))
    columns.append(_categories(batch.labels, schema.label_vocabulary))
    return pa.RecordBatch.from_arrays(columns, schema=target)


def ipc_stream(
    schema: Schema, version: str, split: Split, batches: Iterator[Batch]
) -> Iterator[bytes]:
    """The split's rows as the pieces of one Arrow IPC stream, a batch at a time."""
    target = arrow_schema(schema, version, split)
    sink = io.BytesIO()
    writer = pa.ipc.new_stream(sink, target)
    for batch in batches:
        writer.write_batch(record_batch(target, schema, batch))
        yield _drain(sink)
    writer.close()
    yield _drain(sink)


def _drain(sink: io.BytesIO) -> bytes:
    written = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return written
