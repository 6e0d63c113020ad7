"""The data service: dataset upload, validation, statistics, splits, versions and reads.

Importing it makes Arrow (Parquet files, ReadArrow) allocate from the C allocator, which
hands large freed blocks back to the system, unless the environment chose a pool: with
mimalloc, pyarrow's default, the 1 GB ingest bench's peak resident memory grew by about
35-65 MB more. Arrow reads the variable once, so it is set before pyarrow is imported."""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
