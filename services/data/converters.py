"""Data service protobuf messages to and from the core's value types."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from services.data import entities as e
from shared.errors import invalid
from shared.tensors import to_tensor
from tfmesh.data.v1 import data_pb2 as pb

_FORMATS = {
    pb.DATA_FORMAT_CSV: e.DataFormat.CSV,
    pb.DATA_FORMAT_NPZ: e.DataFormat.NPZ,
    pb.DATA_FORMAT_PARQUET: e.DataFormat.PARQUET,
    pb.DATA_FORMAT_JSONL: e.DataFormat.JSONL,
}
_FORMAT_ENUMS = {value: key for key, value in _FORMATS.items()}
_SPLITS = {
    pb.SPLIT_TRAIN: e.Split.TRAIN,
    pb.SPLIT_VALIDATION: e.Split.VALIDATION,
    pb.SPLIT_TEST: e.Split.TEST,
}
_SPLIT_ENUMS = {value: key for key, value in _SPLITS.items()}
_FEATURE_KINDS = {
    e.FeatureKind.INT: pb.FEATURE_TYPE_INT,
    e.FeatureKind.FLOAT: pb.FEATURE_TYPE_FLOAT,
    e.FeatureKind.CATEGORICAL: pb.FEATURE_TYPE_CATEGORICAL,
}
_ANOMALY_KINDS = {kind: pb.AnomalyKind.Value(f"ANOMALY_KIND_{kind.name}") for kind in e.AnomalyKind}


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _format_name(value: pb.DataFormat.ValueType) -> str:
    if value in _FORMATS:
        return _FORMATS[value].value
    # Unknown formats reach the core by name (or number) so its error can say what came.
    return pb.DataFormat.Name(value) if value in pb.DataFormat.values() else str(value)


def split_ratios_from_proto(message: pb.SplitRatios) -> e.SplitRatios | None:
    """None (the default ratios) when every ratio is unset."""
    if not (message.train or message.validation or message.test):
        return None
    return e.SplitRatios(train=message.train, validation=message.validation, test=message.test)


def upload_spec_from_proto(header: pb.UploadHeader) -> e.UploadSpec:
    return e.UploadSpec(
        dataset=header.dataset,
        format=_format_name(header.format),
        label_column=header.label_column,
        split_ratios=split_ratios_from_proto(header.split_ratios),
        max_bad_row_fraction=(
            header.max_bad_row_fraction if header.HasField("max_bad_row_fraction") else None
        ),
        reference_version=header.reference_version,
    )


def split_from_proto(value: pb.Split.ValueType, field: str = "split") -> e.Split:
    try:
        return _SPLITS[value]
    except KeyError:
        raise invalid(field, "must be SPLIT_TRAIN, SPLIT_VALIDATION or SPLIT_TEST") from None


def optional_split_from_proto(value: pb.Split.ValueType, field: str = "split") -> e.Split | None:
    return None if value == pb.SPLIT_UNSPECIFIED else split_from_proto(value, field)


def schema_to_proto(schema: e.Schema) -> pb.Schema:
    return pb.Schema(
        features=[
            pb.FeatureSchema(
                name=feature.name,
                type=_FEATURE_KINDS[feature.kind],
                min=feature.min or 0.0,
                max=feature.max or 0.0,
                vocabulary=feature.vocabulary,
            )
            for feature in schema.features
        ],
        feature_shape=schema.feature_shape,
        label=schema.label,
        label_vocabulary=schema.label_vocabulary,
    )


def anomalies_to_proto(report: e.AnomalyReport) -> pb.AnomalyReport:
    return pb.AnomalyReport(
        bad_rows=report.bad_rows,
        counts=[
            pb.AnomalyCount(kind=_ANOMALY_KINDS[kind], count=count)
            for kind, count in sorted(report.counts.items())
        ],
        examples=[
            pb.Anomaly(row=a.row, column=a.column, kind=_ANOMALY_KINDS[a.kind], detail=a.detail)
            for a in report.examples
        ],
    )


def version_to_proto(version: e.DatasetVersion) -> pb.DatasetVersion:
    ratios = version.split_ratios
    return pb.DatasetVersion(
        name=version.name,
        dataset=version.dataset,
        digest=version.digest,
        source_sha256=version.source_sha256,
        source_bytes=version.source_bytes,
        format=_FORMAT_ENUMS[version.format],
        label_column=version.label_column,
        split_ratios=pb.SplitRatios(
            train=ratios.train, validation=ratios.validation, test=ratios.test
        ),
        max_bad_row_fraction=version.max_bad_row_fraction,
        reference_version=version.reference_version,
        schema=schema_to_proto(version.schema),
        rows=pb.RowCounts(**version.rows.model_dump()),
        anomalies=anomalies_to_proto(version.anomalies),
        create_time=timestamp(version.created_at),
    )


def statistics_to_proto(version: str, statistics: e.Statistics) -> pb.GetStatisticsResponse:
    return pb.GetStatisticsResponse(
        version=version,
        features=[
            pb.FeatureStatistics(
                name=f.name,
                type=_FEATURE_KINDS[f.kind],
                count=f.count,
                missing=f.missing,
                invalid=f.invalid,
                mean=f.mean or 0.0,
                std=f.std or 0.0,
                min=f.min or 0.0,
                max=f.max or 0.0,
                histogram=(
                    pb.Histogram(edges=f.histogram.edges, counts=f.histogram.counts)
                    if f.histogram
                    else None
                ),
                top_values=[pb.ValueCount(value=v, count=n) for v, n in f.top_values],
            )
            for f in statistics.features
        ],
        labels=[pb.LabelCount(**label.model_dump()) for label in statistics.labels],
        normalization=pb.Normalization(
            mean=statistics.normalization.mean,
            std=statistics.normalization.std,
            rows=statistics.normalization.rows,
        ),
    )


def parquet_from_proto(value: pb.ShardFormat.ValueType) -> bool:
    """Whether a GetShards request asks for Parquet files (else .npy shards)."""
    if value not in pb.ShardFormat.values():
        raise invalid("format", f"unknown shard format {value}")
    return value == pb.SHARD_FORMAT_PARQUET


def _shard_to_proto(location: e.ShardLocation) -> pb.Shard:
    shard = location.shard
    npy = isinstance(shard, e.ShardInfo)
    return pb.Shard(
        split=_SPLIT_ENUMS[shard.split],
        index=shard.index,
        sha256=shard.sha256,
        rows=shard.rows,
        size_bytes=shard.size_bytes,
        header_bytes=shard.header_bytes if isinstance(shard, e.ShardInfo) else 0,
        uri=location.uri,
        format=pb.SHARD_FORMAT_NPY if npy else pb.SHARD_FORMAT_PARQUET,
    )


def shards_to_proto(shards: e.Shards) -> pb.GetShardsResponse:
    return pb.GetShardsResponse(
        version=shards.version,
        shards=[_shard_to_proto(location) for location in shards.locations],
        feature_shape=shards.feature_shape,
        record_bytes=shards.record_bytes,
    )


def batch_to_proto(batch: e.Batch) -> pb.ReadBatchesResponse:
    return pb.ReadBatchesResponse(
        features=to_tensor(batch.features),
        labels=to_tensor(batch.labels),
        first_row=batch.first_row,
    )
