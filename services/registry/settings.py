"""Settings of the registry service, from `TFMESH_REGISTRY_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TFMESH_REGISTRY_")

    port: int = Field(default=50053, ge=0, le=65535)
    # SQLAlchemy URL; empty means SQLite at $TFMESH_HOME/registry/registry.db.
    database_url: str = ""
    max_artifact_bytes: int = Field(default=4 * 1024**3, ge=1)
    # The promotion rule a model gets when it is created without one.
    default_promotion_metric: str = "accuracy"
    default_min_improvement: float = Field(default=0.0, ge=0)
    default_higher_is_better: bool = True
    # How often a watch stream re-reads the change table (changes made by other
    # processes sharing the database); changes made here wake it at once.
    watch_poll_interval_s: float = Field(default=1.0, gt=0)
    default_page_size: int = Field(default=50, ge=1, le=1000)
