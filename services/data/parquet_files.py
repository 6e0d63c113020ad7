"""A version's splits as Parquet files, beside its .npy shards.

Each split's kept rows are written as Parquet files of a fixed number of rows (the
shards' number; the last file of a split fewer), in the columns ReadArrow serves
(services.data.arrow_reads: one typed column per feature of a table, categoricals and
the label as dictionaries; arrays as fixed-size lists), zstd-compressed, dictionary
encoded where the column is a dictionary, with each column's statistics in the footer
and the version's schema (tfmesh's JSON, and the feature shape) in the file's key-value
metadata. Files are content addressed in the blob store like shards, so DuckDB, pandas
or Spark read a version's split where it lies. The files name no version: the same rows
under the same schema, written by the same pyarrow, make the same files, whichever
version holds them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.data.arrow_reads import ArrowRows
from services.data.entities import Batch, ParquetFile, Schema, Split
from services.data.shards import FEATURES, LABELS, BlobSink

COMPRESSION = "zstd"
SCHEMA_KEY = b"tfmesh.schema"


class ParquetFiles:
    """Writes a split's rows, a file's worth at a time, as Parquet files."""

    def __init__(self, sink: BlobSink, split: Split, schema: Schema) -> None:
        self._sink = sink
        self._split = split
        self._rows = ArrowRows(schema, split)
        self._metadata = {
            **(self._rows.schema.metadata or {}),
            SCHEMA_KEY: schema.model_dump_json().encode(),
        }
        # Dictionary pages for the dictionary columns (categoricals, the label) only:
        # trying them on numbers costs ten times the rest of the write and rarely pays.
        self._dictionary_columns = [
            f.name for f in self._rows.schema if pa.types.is_dictionary(f.type)
        ]
        self.files: list[ParquetFile] = []

    def write(self, records: np.ndarray, index: int) -> None:
        """Store `records` (the shards' record dtype) as the split's file `index`."""
        batch = self._rows.batch(Batch(0, records[FEATURES], records[LABELS]))
        table = pa.Table.from_batches([batch]).replace_schema_metadata(self._metadata)
        out = pa.BufferOutputStream()
        pq.write_table(
            table,
            out,
            compression=COMPRESSION,
            use_dictionary=self._dictionary_columns,
            write_statistics=True,
        )
        digest, size = self._sink.put([memoryview(out.getvalue())])
        self.files.append(
            ParquetFile(
                split=self._split, index=index, sha256=digest, rows=len(records), size_bytes=size
            )
        )
