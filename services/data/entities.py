"""Value types the data core takes and returns (no ORM, no protobuf).

What a version stores as JSON (schema, statistics, anomaly report, split ratios) are
frozen pydantic models, so they round-trip through the metadata store unchanged; the
rest are frozen dataclasses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from shared.errors import invalid
from shared.names import name_problem

T = TypeVar("T")

DIGEST_PREFIX_CHARS = 12
_DIGEST_PREFIX = re.compile(rf"^[0-9a-f]{{{DIGEST_PREFIX_CHARS}}}$")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class DataFormat(StrEnum):
    CSV = "csv"
    NPZ = "npz"
    PARQUET = "parquet"
    JSONL = "jsonl"

    @property
    def tabular(self) -> bool:
        """One feature per column and a named label column (all but NPZ)."""
        return self is not DataFormat.NPZ


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


SPLITS = (Split.TRAIN, Split.VALIDATION, Split.TEST)


class FeatureKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    CATEGORICAL = "categorical"


class AnomalyKind(StrEnum):
    MISSING_VALUE = "missing_value"
    NOT_A_NUMBER = "not_a_number"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_CATEGORY = "unknown_category"
    MISSING_LABEL = "missing_label"
    UNKNOWN_LABEL = "unknown_label"


class SplitRatios(Frozen):
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.train, self.validation, self.test)


@dataclass(frozen=True)
class UploadSpec:
    """What an upload's header asks for; None means the server's default."""

    dataset: str
    format: str
    label_column: str = ""
    split_ratios: SplitRatios | None = None
    max_bad_row_fraction: float | None = None
    reference_version: str = ""


class FeatureSchema(Frozen):
    name: str
    kind: FeatureKind
    min: float | None = None
    max: float | None = None
    vocabulary: list[str] = []


class Schema(Frozen):
    features: list[FeatureSchema]
    feature_shape: list[int]
    label: str
    label_vocabulary: list[str]


class Anomaly(Frozen):
    row: int
    column: str
    kind: AnomalyKind
    detail: str


class AnomalyReport(Frozen):
    bad_rows: int = 0
    counts: dict[AnomalyKind, int] = {}
    examples: list[Anomaly] = []


class RowCounts(Frozen):
    total: int
    kept: int
    dropped: int
    train: int
    validation: int
    test: int


class Histogram(Frozen):
    edges: list[float]
    counts: list[int]


class FeatureStatistics(Frozen):
    name: str
    kind: FeatureKind
    count: int
    missing: int
    invalid: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    histogram: Histogram | None = None
    top_values: list[tuple[str, int]] = []


class LabelCount(Frozen):
    label: str
    index: int
    count: int
    train: int
    validation: int
    test: int


class Normalization(Frozen):
    mean: list[float]
    std: list[float]
    rows: int


class Statistics(Frozen):
    features: list[FeatureStatistics]
    labels: list[LabelCount]
    normalization: Normalization


class ShardInfo(Frozen):
    split: Split
    index: int
    sha256: str
    rows: int
    size_bytes: int
    header_bytes: int


class ParquetFile(Frozen):
    """One Parquet file of a split's rows, content addressed like a shard."""

    split: Split
    index: int
    sha256: str
    rows: int
    size_bytes: int


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    dataset: str
    digest: str
    source_sha256: str
    source_bytes: int
    format: DataFormat
    label_column: str
    split_ratios: SplitRatios
    max_bad_row_fraction: float
    reference_version: str
    schema: Schema
    rows: RowCounts
    anomalies: AnomalyReport
    created_at: datetime


@dataclass(frozen=True)
class ShardLocation:
    shard: ShardInfo | ParquetFile
    uri: str


@dataclass(frozen=True)
class Shards:
    """A version's shard files (or its Parquet files): where each lies, and the layout of
    the shards' records (0 bytes for Parquet files)."""

    version: str
    feature_shape: list[int]
    record_bytes: int
    locations: list[ShardLocation]


@dataclass(frozen=True)
class Batch:
    """Rows `first_row ...` of a split: float32 features and int64 class indices."""

    first_row: int
    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def version_name(dataset: str, digest: str) -> str:
    return f"{dataset}@{digest[:DIGEST_PREFIX_CHARS]}"


def check_version_name(name: str, field: str) -> str:
    """`name` if it reads `dataset@<12 hex>`, else InvalidArgument on `field`."""
    dataset, at, prefix = name.rpartition("@")
    if not at:
        raise invalid(field, f"must be 'dataset@<{DIGEST_PREFIX_CHARS} hex>', got {name!r}")
    problem = name_problem(dataset)
    if problem:
        raise invalid(field, f"dataset name {problem}")
    if not _DIGEST_PREFIX.match(prefix):
        raise invalid(field, f"must end in '@' and {DIGEST_PREFIX_CHARS} lower-case hex digits")
    return name
