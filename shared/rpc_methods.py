"""What the protos declare about each gRPC method: the permission a caller needs, and
whether a failed call may be tried again.

tfmesh's own RPCs declare both beside their definition (protos/tfmesh/common/v1/
options.proto): `(tfmesh.common.v1.permission)`, and protobuf's `idempotency_level`.
Services read the permission (shared.permissions), and every client channel reads the
idempotency (shared.retries): a call declared NO_SIDE_EFFECTS or IDEMPOTENT is retried
on UNAVAILABLE and ABORTED, any other never. A method is named by its gRPC path,
`/package.Service/Method`."""

from __future__ import annotations

import functools

from google.protobuf import descriptor, descriptor_pb2

from tfmesh.common.v1 import options_pb2
from tfmesh.data.v1 import data_pb2
from tfmesh.inference.v1 import inference_pb2
from tfmesh.registry.v1 import registry_pb2
from tfmesh.training.v1 import training_pb2

SERVICES: tuple[descriptor.ServiceDescriptor, ...] = tuple(
    service
    for module in (data_pb2, training_pb2, registry_pb2, inference_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
)
_METHODS = {
    f"/{service.full_name}/{method.name}": method
    for service in SERVICES
    for method in service.methods
}
_RETRYABLE_LEVELS = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


def tfmesh_methods() -> list[str]:
    """The paths of every tfmesh RPC."""
    return list(_METHODS)


def declared_permission(path: str) -> str | None:
    """The permission a tfmesh RPC declares (`read`, `predict`, ...); None for a method
    that is not tfmesh's or declares none."""
    method = _METHODS.get(path)
    if method is None:
        return None
    value = method.GetOptions().Extensions[options_pb2.permission]
    if value == options_pb2.PERMISSION_UNSPECIFIED:
        return None
    return options_pb2.Permission.Name(value).removeprefix("PERMISSION_").lower()


@functools.cache
def retryable(path: str) -> bool:
    """Whether a failed call of `path` may be tried again (its proto says it has no side
    effects, or is idempotent); False for a method no tfmesh proto declares."""
    method = _METHODS.get(path)
    return method is not None and method.GetOptions().idempotency_level in _RETRYABLE_LEVELS
