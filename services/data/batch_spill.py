"""Record batches set aside between ingest's two passes, on disk.

The first pass reads the upload (parsing a CSV is most of its cost) and writes each batch
here as it will be needed again: numbers already parsed where a column held only
numbers, the original text elsewhere. The second pass reads them back instead of
parsing the upload again. Each batch is an Arrow IPC stream of its own, so batches may
differ in their columns' types. The file is unlinked from the start (the system frees it
when it is closed or the process dies) and read with plain reads, not mapped, so the
memory it takes is one batch's."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa


class BatchSpill:
    def __init__(self, directory: Path) -> None:
        # Open until `close`: the spill outlives this call.
        self._file = tempfile.TemporaryFile(dir=directory, prefix="spill-")  # noqa: SIM115
        self._extents: list[tuple[int, int]] = []
        self._end = 0

    def write(self, batch: pa.RecordBatch) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        data = sink.getvalue()
        self._file.seek(self._end)
        self._file.write(memoryview(data))
        self._extents.append((self._end, data.size))
        self._end += data.size

    def batches(self) -> Iterator[pa.RecordBatch]:
        for offset, size in self._extents:
            self._file.seek(offset)
            yield pa.ipc.open_stream(pa.py_buffer(self._file.read(size))).read_next_batch()

    def close(self) -> None:
        self._file.close()
