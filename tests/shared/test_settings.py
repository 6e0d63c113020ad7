"""`shared.settings`: values come from the environment at load time, and a bad value fails
with a SettingsError whose message names the environment variable to fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, SettingsError, load_settings


class DataSettings(ServiceSettings):
    """A service's own settings class, as each service defines one."""

    model_config = SettingsConfigDict(env_prefix="TFMESH_DATA_", extra="ignore", frozen=True)

    max_rows: int = 1000


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from no TFMESH_ variables, whatever the calling shell set."""
    for variable in list(os.environ):
        if variable.startswith("TFMESH_"):
            monkeypatch.delenv(variable)


def settings_error(cls: type[ServiceSettings] = ServiceSettings) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(cls)
    return str(raised.value)


def test_defaults_without_any_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(ServiceSettings)
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 0, -1)
    assert settings.home == tmp_path / ".tfmesh"
    assert settings.tls_cert_file is None


def test_values_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TFMESH_PORT", "50051")
    monkeypatch.setenv("TFMESH_SHUTDOWN_GRACE_S", "2.5")
    monkeypatch.setenv("TFMESH_HOME", str(tmp_path))
    settings = load_settings(ServiceSettings)
    assert settings.port == 50051
    assert settings.shutdown_grace_s == 2.5
    assert settings.home == tmp_path


def test_each_service_reads_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFMESH_PORT", "1111")
    monkeypatch.setenv("TFMESH_DATA_PORT", "50051")
    monkeypatch.setenv("TFMESH_DATA_MAX_ROWS", "7")
    settings = load_settings(DataSettings)
    assert (settings.port, settings.max_rows) == (50051, 7)


def test_explicit_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFMESH_PORT", "50051")
    assert load_settings(ServiceSettings, port=0).port == 0


def test_settings_are_frozen() -> None:
    settings = load_settings(ServiceSettings)
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TFMESH_PORT", "abc"),
        ("TFMESH_PORT", "70000"),
        ("TFMESH_METRICS_PORT", "-2"),
        ("TFMESH_MAX_MESSAGE_BYTES", "10"),
        ("TFMESH_SHUTDOWN_GRACE_S", "soon"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert variable in settings_error()


def test_bad_value_names_the_services_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFMESH_DATA_MAX_ROWS", "many")
    message = settings_error(DataSettings)
    assert "TFMESH_DATA_MAX_ROWS" in message


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFMESH_PORT", "abc")
    monkeypatch.setenv("TFMESH_METRICS_PORT", "xyz")
    message = settings_error()
    assert "TFMESH_PORT" in message and "TFMESH_METRICS_PORT" in message


def test_tls_certificate_without_key_names_both_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certificate = tmp_path / "server.pem"
    certificate.write_text("not checked here")
    monkeypatch.setenv("TFMESH_TLS_CERT_FILE", str(certificate))
    message = settings_error()
    assert "TFMESH_TLS_CERT_FILE" in message and "TFMESH_TLS_KEY_FILE" in message


def test_client_ca_without_server_pair_is_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client_ca = tmp_path / "ca.pem"
    client_ca.write_text("not checked here")
    monkeypatch.setenv("TFMESH_DATA_TLS_CLIENT_CA_FILE", str(client_ca))
    assert "TFMESH_DATA_TLS_CLIENT_CA_FILE" in settings_error(DataSettings)


def test_missing_tls_file_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = tmp_path / "server-key.pem"
    key.write_text("present")
    monkeypatch.setenv("TFMESH_TLS_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("TFMESH_TLS_KEY_FILE", str(key))
    message = settings_error()
    assert "TFMESH_TLS_CERT_FILE" in message and "missing.pem" in message


def test_nothing_is_read_at_import_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFMESH_PORT", "abc")

    # Defining a settings class with a bad environment is fine; loading it is not.
    class LateSettings(ServiceSettings):
        pass

    assert "TFMESH_PORT" in settings_error(LateSettings)


def test_a_process_wide_blob_url_gives_each_service_its_own_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.data.settings import DataSettings as DataServiceSettings
    from services.registry.settings import RegistrySettings

    monkeypatch.setenv("TFMESH_BLOB_URL", "s3://lake/tfmesh/")
    assert DataServiceSettings().blob_location() == "s3://lake/tfmesh/data"
    assert RegistrySettings().blob_location() == "s3://lake/tfmesh/registry"
    monkeypatch.setenv("TFMESH_REGISTRY_BLOB_URL", "s3://models")
    assert RegistrySettings().blob_location() == "s3://models"
    monkeypatch.delenv("TFMESH_BLOB_URL")
    assert DataServiceSettings().blob_location() == ""
