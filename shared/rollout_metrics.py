"""The metrics a rollout check may name, by the one rule between their two spellings:
`error_ratio` in the CLI, the REST API and the registry's store; `METRIC_ERROR_RATIO` in
the `tfmesh.registry.v1.RolloutCheck.Metric` enum."""

from __future__ import annotations

from tfmesh.registry.v1 import registry_pb2 as pb

# name -> enum number, for every metric but the unspecified one.
BY_NAME: dict[str, pb.RolloutCheck.Metric.ValueType] = {
    name.removeprefix("METRIC_").lower(): number
    for name, number in pb.RolloutCheck.Metric.items()
    if number
}
# enum number -> name; an unspecified or unknown number has none.
BY_NUMBER: dict[pb.RolloutCheck.Metric.ValueType, str] = {
    number: name for name, number in BY_NAME.items()
}
