"""Typed settings from environment variables, one class per service (12-factor).

Every service subclasses `ServiceSettings` with its own `env_prefix`. Nothing is read at
import time: `load_settings` builds the object at start-up, and a missing or bad value
fails fast with `SettingsError` naming the environment variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.tls import TlsFiles


def default_home() -> Path:
    return Path(os.environ.get("TFMESH_HOME", ".tfmesh")).resolve()


TLS_FIELDS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file")
# Process-wide when a service's own is unset: TFMESH_<FIELD>.
SHARED_FIELDS = (
    *TLS_FIELDS,
    "auth_tokens_file",
    "auth_jwks",
    "auth_jwt_issuer",
    "auth_jwt_audience",
    "auth_jwt_roles_claim",
)


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable."""


class TlsSettings(BaseSettings):
    """The TLS files of a process that serves and calls (every service, the gateway)."""

    model_config = SettingsConfigDict(env_prefix="TFMESH_", extra="ignore", frozen=True)

    # TLS (shared.tls): this process's certificate and key turn TLS on for its servers
    # and are its identity as a client; a client CA makes its servers demand client
    # certificates (mTLS); the CA is what it verifies the servers it calls with. Unset,
    # each falls back to the process-wide TFMESH_TLS_* variable.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _process_wide_tls(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in SHARED_FIELDS:
            value = os.environ.get(f"TFMESH_{name.upper()}")
            if data.get(name) is None and value:
                data = {**data, name: value}
        return data

    def tls_files(self) -> TlsFiles:
        return TlsFiles(
            self.tls_ca_file, self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file
        )

    @model_validator(mode="after")
    def _tls_pair(self) -> TlsSettings:
        # A cross-field error has no single field location, so its message names the
        # environment variables itself (the service's own, or the process-wide one).
        prefix = str(self.model_config.get("env_prefix", "")).upper()

        def variable(name: str) -> str:
            own, shared = f"{prefix}{name.upper()}", f"TFMESH_{name.upper()}"
            return own if own == shared else f"{own} (or {shared})"

        ca, cert, key, client_ca = (variable(name) for name in TLS_FIELDS)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(f"{cert} and {key} must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(f"{client_ca} needs {cert} and {key}")
        for setting, path in (
            (ca, self.tls_ca_file),
            (cert, self.tls_cert_file),
            (key, self.tls_key_file),
            (client_ca, self.tls_client_ca_file),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{setting}: {path} is not a readable file")
        return self


class SecuritySettings(TlsSettings):
    """TLS, and who may call: the principals' tokens file (shared.auth; unset, anyone may)
    and this process's own token for the calls it makes to other services."""

    auth_tokens_file: Path | None = None
    auth_token: str = ""
    # Bearer JWTs (shared.jwt_auth): the key set, a file or an http(s) URL; the issuer and
    # audience a token must name when set; the claim that lists its roles.
    auth_jwks: str = ""
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    auth_jwt_roles_claim: str = "roles"

    @model_validator(mode="after")
    def _tokens_file(self) -> SecuritySettings:
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        if self.auth_tokens_file is not None and not self.auth_tokens_file.is_file():
            raise ValueError(
                f"{prefix}AUTH_TOKENS_FILE (or TFMESH_AUTH_TOKENS_FILE): "
                f"{self.auth_tokens_file} is not a readable file"
            )
        remote = self.auth_jwks.startswith(("https://", "http://"))
        if self.auth_jwks and not remote and not Path(self.auth_jwks).is_file():
            raise ValueError(
                f"{prefix}AUTH_JWKS (or TFMESH_AUTH_JWKS): {self.auth_jwks} is neither a "
                "readable file nor an http(s) URL"
            )
        return self


class ServiceSettings(SecuritySettings):
    """What every gRPC service is configured with."""

    model_config = SettingsConfigDict(env_prefix="TFMESH_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    # Prometheus /metrics HTTP port; 0 picks a free one, -1 turns it off.
    metrics_port: int = Field(default=-1, ge=-1, le=65535)
    home: Path = Field(default_factory=default_home)
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace_s: float = Field(default=10.0, ge=0)


class StatefulSettings(ServiceSettings):
    """A service that keeps rows in a database and blobs in a blob store (shared.blobstore)."""

    # SQLAlchemy URL; empty means SQLite under $TFMESH_HOME.
    database_url: str = ""
    # Where blobs live: empty for the local filesystem under $TFMESH_HOME, another local
    # path, or s3://bucket[/prefix] (endpoint and credentials the standard AWS way).
    # Unset, the process-wide TFMESH_BLOB_URL with the service's name appended applies,
    # so services sharing one URL never share (or collect) each other's blobs.
    blob_url: str = ""
    # With a store that replicas share (object storage), only what has been left at least
    # this long is swept or collected: a younger upload may be another replica's.
    blob_grace_s: float = Field(default=3600.0, ge=0)
    # How often one replica collects unnamed blobs from a shared store.
    blob_collect_interval_s: float = Field(default=600.0, gt=0)
    # How often the blob store is checked for health (NOT_SERVING while it is away).
    blob_check_interval_s: float = Field(default=2.0, gt=0)

    def service_name(self) -> str:
        prefix = str(self.model_config.get("env_prefix", ""))
        return prefix.removeprefix("TFMESH_").rstrip("_").lower()

    def blob_location(self) -> str:
        """This service's blob URL: its own, or the process-wide one plus its name."""
        if self.blob_url:
            return self.blob_url
        shared = os.environ.get("TFMESH_BLOB_URL", "").rstrip("/")
        return f"{shared}/{self.service_name()}" if shared else ""

    def blob_setting(self) -> str:
        """The variables that name this service's blob store, for errors."""
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        return f"{prefix}BLOB_URL (or TFMESH_BLOB_URL)"


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build `cls` from the environment (and explicit overrides), naming bad variables."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"])
            variable = f"{prefix}{field}".upper() if field else f"{prefix}*"
            problems.append(f"{variable}: {item['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
