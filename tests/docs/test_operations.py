"""docs/operations.md names every setting of every process: a field added to a settings
class without a line in the document fails here."""

from __future__ import annotations

import pytest

from gateway.settings import GatewaySettings
from services.data.settings import DataSettings
from services.inference.settings import InferenceSettings
from services.registry.settings import RegistrySettings
from services.training.settings import TrainingSettings
from shared.settings import ServiceSettings
from tests.support.processes import REPO

OPERATIONS = REPO / "docs" / "operations.md"
SETTINGS = [DataSettings, TrainingSettings, RegistrySettings, InferenceSettings, GatewaySettings]
COMMON = set(ServiceSettings.model_fields)


def documented_names(cls) -> list[str]:
    """The variables of `cls` as the document writes them: its own with the full name, the
    ones every gRPC service shares with `<PREFIX>`."""
    prefix = cls.model_config["env_prefix"]
    shared = issubclass(cls, ServiceSettings)
    return [
        f"<PREFIX>{name.upper()}" if shared and name in COMMON else f"{prefix}{name.upper()}"
        for name in cls.model_fields
    ]


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_setting_is_documented(cls):
    text = OPERATIONS.read_text()
    missing = [name for name in documented_names(cls) if f"`{name}`" not in text]
    assert not missing, f"docs/operations.md does not document {missing}"
