"""The inference service: dynamic batching onto loaded model versions, three protocols.

Importing the package installs prometheus_client's multiprocess values with a cached
process id (shared.prometheus_values) before any module defines a metric."""

from shared import prometheus_values

prometheus_values.install()
