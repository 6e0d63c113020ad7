"""Settings of the data service, from `TFMESH_DATA_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StatefulSettings


class DataSettings(StatefulSettings):
    model_config = SettingsConfigDict(env_prefix="TFMESH_DATA_")

    port: int = Field(default=50051, ge=0, le=65535)
    # host:port of the registry, asked before a delete whether a model's lineage
    # names the version; empty means deletes are soft (hidden, content kept).
    registry_addr: str = ""
    registry_deadline_s: float = Field(default=10.0, gt=0)
    # Bad-row policy of uploads that do not set one.
    default_max_bad_row_fraction: float = Field(default=0.05, ge=0, le=1)
    max_upload_bytes: int = Field(default=16 * 1024**3, ge=1)
    # Bytes of source read and parsed at a time; bounds the memory of an ingest.
    parse_block_bytes: int = Field(default=1024 * 1024, ge=4096)
    # Target size of one shard file; each split buffers at most one shard.
    shard_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Distinct values a categorical feature, or the label, may have.
    max_categories: int = Field(default=1000, ge=2)
    histogram_bins: int = Field(default=10, ge=1, le=1000)
    # Anomalies kept as examples per version (counts are always exact).
    max_anomaly_examples: int = Field(default=100, ge=0)
    default_batch_size: int = Field(default=256, ge=1)
    max_batch_size: int = Field(default=65536, ge=1)
    default_page_size: int = Field(default=50, ge=1, le=1000)
