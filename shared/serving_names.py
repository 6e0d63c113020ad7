"""Names every serving surface agrees on: the SavedModel signature that training exports
and every protocol serves, the name and version the server reports (KServe's server
metadata; the version is the package's, kept equal to pyproject.toml by a test), and the
REST answer header that names the model version that computed a prediction."""

from __future__ import annotations

SIGNATURE = "serving_default"
SERVER_NAME = "tfmesh"
SERVER_VERSION = "0.1.0"
# On every REST prediction answer (TF Serving's JSON does not say which version answered);
# the gateway's access log reads it.
VERSION_HEADER = "Tfmesh-Model-Version"
