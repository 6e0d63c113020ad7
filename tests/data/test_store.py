"""The metadata store on SQLite and on a real PostgreSQL: versions with their shards and
Parquet files commit together, soft deletes hide, purges forget, and blob references are exact."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.data.entities import (
    AnomalyReport,
    DataFormat,
    DatasetVersion,
    FeatureKind,
    FeatureSchema,
    Normalization,
    ParquetFile,
    RowCounts,
    Schema,
    ShardInfo,
    Split,
    SplitRatios,
    Statistics,
)
from services.data.store import MetadataStore
from shared.db import make_engine
from shared.errors import NotFound

STATISTICS = Statistics(
    features=[], labels=[], normalization=Normalization(mean=[0.5], std=[1.0], rows=3)
)


def version(name: str, source: str) -> DatasetVersion:
    return DatasetVersion(
        name=name,
        dataset=name.split("@")[0],
        digest=name.split("@")[1] + "0" * 52,
        source_sha256=source,
        source_bytes=10,
        format=DataFormat.CSV,
        label_column="label",
        split_ratios=SplitRatios(),
        max_bad_row_fraction=0.05,
        reference_version="",
        schema=Schema(
            features=[FeatureSchema(name="a", kind=FeatureKind.FLOAT, min=0.0, max=1.0)],
            feature_shape=[1],
            label="label",
            label_vocabulary=["x", "y"],
        ),
        rows=RowCounts(total=4, kept=3, dropped=1, train=2, validation=1, test=0),
        anomalies=AnomalyReport(),
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def shard(split: Split, index: int, digest: str) -> ShardInfo:
    return ShardInfo(
        split=split, index=index, sha256=digest, rows=1, size_bytes=140, header_bytes=128
    )


def parquet(split: Split, index: int, digest: str) -> ParquetFile:
    return ParquetFile(split=split, index=index, sha256=digest, rows=1, size_bytes=900)


@pytest.fixture
def store(database_url) -> MetadataStore:
    return MetadataStore(make_engine(database_url))


def test_versions_with_shards_and_parquet_files_round_trip(store):
    first = version("iris@aaaaaaaaaaaa", "1" * 64)
    shards = [
        shard(Split.VALIDATION, 0, "4" * 64),
        shard(Split.TRAIN, 1, "3" * 64),
        shard(Split.TRAIN, 0, "2" * 64),
    ]
    files = [parquet(Split.TRAIN, 1, "6" * 64), parquet(Split.TRAIN, 0, "5" * 64)]
    store.insert(first, STATISTICS, shards, files)
    assert store.get(first.name) == first
    assert store.find(first.name) == (first, False)
    assert store.statistics(first.name) == STATISTICS
    assert [s.sha256[0] for s in store.shards(first.name, None)] == ["2", "3", "4"]
    assert store.shards(first.name, Split.TEST) == []
    assert [f.sha256[0] for f in store.parquet_files(first.name, Split.TRAIN)] == ["5", "6"]
    assert store.parquet_files(first.name, Split.VALIDATION) == []
    assert store.referenced() == {str(i) * 64 for i in range(1, 7)}
    assert store.referenced({"1" * 64, "6" * 64, "9" * 64}) == {"1" * 64, "6" * 64}
    assert store.purge(first.name) == {str(i) * 64 for i in range(1, 7)}
    assert store.referenced() == set()


def test_pages_soft_deletes_and_purges(store):
    names = [f"set{i % 2}@{str(i) * 12}" for i in range(4)]
    for i, name in enumerate(names):
        store.insert(version(name, str(i) * 64), STATISTICS, [shard(Split.TRAIN, 0, "f" * 64)], [])
    page = store.page("", None, 3)
    assert [v.name for _, v in page] == names[::-1][:3]
    assert [v.name for _, v in store.page("", page[-1][0], 3)] == [names[0]]
    assert [v.name for _, v in store.page("set1", None, 10)] == [names[3], names[1]]
    store.set_deleted(names[3], datetime.now(UTC))
    with pytest.raises(NotFound):
        store.get(names[3])
    assert store.find(names[3])[1] is True
    assert "3" * 64 in store.referenced(), "soft-deleted content stays referenced"
    assert store.purge(names[2]) == {"2" * 64, "f" * 64}
    assert store.find(names[2]) is None
    assert store.referenced({"2" * 64, "f" * 64}) == {"f" * 64}
    store.set_deleted(names[3], None)
    assert store.get(names[3]).name == names[3]
