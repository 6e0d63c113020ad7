"""Settings of the registry service, from `TFMESH_REGISTRY_*` environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.settings import StatefulSettings

CommaList = Annotated[list[str], NoDecode]


class RegistrySettings(StatefulSettings):
    model_config = SettingsConfigDict(env_prefix="TFMESH_REGISTRY_")

    port: int = Field(default=50053, ge=0, le=65535)
    max_artifact_bytes: int = Field(default=4 * 1024**3, ge=1)
    # The promotion rule a model gets when it is created without one.
    default_promotion_metric: str = "accuracy"
    default_min_improvement: float = Field(default=0.0, ge=0)
    default_higher_is_better: bool = True
    # How often a watch stream re-reads the change table (changes made by other
    # processes sharing the database); changes made here wake it at once.
    watch_poll_interval_s: float = Field(default=1.0, gt=0)
    default_page_size: int = Field(default=50, ge=1, le=1000)
    # The inference service whose per-version figures the rollout controller reads:
    # one address, or several (comma-separated) whose figures add up; empty turns the
    # controller off (policies can still be set).
    inference_addr: CommaList = Field(default_factory=list)
    # Read every IP each address's name resolves to (a headless Service: every pod), on
    # every tick, and add their figures up.
    inference_fan_out: bool = False
    # How often the controller looks at rollouts and new versions.
    rollout_interval_s: float = Field(default=2.0, gt=0, le=3600)
    # How long the replica running the controller holds its lease without renewing it:
    # another replica takes over within this long of the holder's death.
    controller_lease_s: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("inference_addr", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _lease_outlasts_a_round(self) -> RegistrySettings:
        # The holder renews once a round: a shorter lease would lapse between renewals.
        if self.controller_lease_s <= self.rollout_interval_s:
            raise ValueError(
                "TFMESH_REGISTRY_CONTROLLER_LEASE_S must be longer than "
                "TFMESH_REGISTRY_ROLLOUT_INTERVAL_S"
            )
        return self
