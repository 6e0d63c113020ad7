"""Names every serving surface agrees on: the SavedModel signature that training exports
and every protocol serves, and the name and version the server reports (KServe's server
metadata); the version is the package's, kept equal to pyproject.toml by a test."""

from __future__ import annotations

SIGNATURE = "serving_default"
SERVER_NAME = "tfmesh"
SERVER_VERSION = "0.1.0"
