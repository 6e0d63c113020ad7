"""A version's split as Apache Arrow record batches, in Arrow's IPC stream format.

Tabular versions (one feature per value of a 1-D example: CSV uploads, and NPZ uploads
of 1-D arrays) become one column per feature: FLOAT features as float32, INT features as
int64 (stored as float32, so exact up to 2**24), CATEGORICAL features as dictionary
arrays over their vocabulary (pandas reads them as categoricals). Versions of
multi-dimensional arrays (images) become one `x` column of fixed-size lists of float32,
the example's shape in the field's metadata. The label is a dictionary array over the
label vocabulary. The schema's metadata names the split, the feature shape and (for
reads) the version. `ipc_stream` yields the bytes of one IPC stream piece by piece
(schema and first batch, then a batch at a time, then the end-of-stream marker), so a
reader can concatenate them or parse them as they come."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Generator, Iterator

import numpy as np
import pyarrow as pa

from services.data.entities import Batch, FeatureKind, Schema, Split
from shared.errors import invalid

DICTIONARY = pa.dictionary(pa.int32(), pa.string())


class ArrowRows:
    """Converts a version's stored rows (float32 features, int64 label indices) to
    record batches of one Arrow schema."""

    def __init__(self, schema: Schema, split: Split, version: str = "") -> None:
        self._schema = schema
        shape = schema.feature_shape
        self._tabular = len(shape) == 1 and len(schema.features) == shape[0]
        # Each categorical feature's and the label's values, built once.
        self._values = {
            feature.name: pa.array(feature.vocabulary, pa.string())
            for feature in schema.features
            if feature.kind is FeatureKind.CATEGORICAL
        }
        self._labels = pa.array(schema.label_vocabulary, pa.string())
        self.schema = self._arrow_schema(split, version)

    def _arrow_schema(self, split: Split, version: str) -> pa.Schema:
        schema = self._schema
        fields = []
        if self._tabular:
            types = {FeatureKind.CATEGORICAL: DICTIONARY, FeatureKind.INT: pa.int64()}
            fields = [pa.field(f.name, types.get(f.kind, pa.float32())) for f in schema.features]
        else:
            shape = json.dumps(schema.feature_shape).encode()
            size = math.prod(schema.feature_shape)
            fields = [pa.field("x", pa.list_(pa.float32(), size), metadata={b"shape": shape})]
        fields.append(pa.field(schema.label, DICTIONARY))
        metadata = {
            b"tfmesh.split": split.value.encode(),
            b"tfmesh.feature_shape": json.dumps(schema.feature_shape).encode(),
        }
        if version:
            metadata[b"tfmesh.version"] = version.encode()
        return pa.schema(fields, metadata=metadata)

    def batch(self, batch: Batch) -> pa.RecordBatch:
        """`batch`'s rows as a record batch of `self.schema`."""
        columns: list[pa.Array] = []
        features = batch.features
        if self._tabular:
            for j, feature in enumerate(self._schema.features):
                values = pa.array(np.ascontiguousarray(features[:, j]))
                if feature.kind is FeatureKind.CATEGORICAL:
                    columns.append(_categories(values, self._values[feature.name]))
                elif feature.kind is FeatureKind.INT:
                    columns.append(_whole(values, feature.name))
                else:
                    columns.append(values)
        else:
            flat = pa.array(np.ascontiguousarray(features, dtype=np.float32).reshape(-1))
            size = math.prod(self._schema.feature_shape)
            columns.append(pa.FixedSizeListArray.from_arrays(flat, size))
        columns.append(_categories(pa.array(batch.labels), self._labels))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


def _whole(values: pa.Array, name: str) -> pa.Array:
    """An INT feature's stored float32 values as int64: a safe cast, which refuses a value
    that is not whole or that int64 does not hold rather than change it."""
    try:
        return values.cast(pa.int64())
    except pa.ArrowInvalid as error:
        raise invalid(name, f"an INT feature holds a value int64 cannot: {error}") from None


def _categories(codes: pa.Array, values: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(codes.cast(pa.int32()), values)


def ipc_stream(
    schema: Schema, version: str, split: Split, batches: Iterator[Batch]
) -> Generator[bytes, None, None]:
    """The split's rows as the pieces of one Arrow IPC stream, a batch at a time."""
    rows = ArrowRows(schema, split, version)
    sink = io.BytesIO()
    writer = pa.ipc.new_stream(sink, rows.schema)
    for batch in batches:
        writer.write_batch(rows.batch(batch))
        yield _drain(sink)
    writer.close()
    yield _drain(sink)


def _drain(sink: io.BytesIO) -> bytes:
    written = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return written
