"""Who may do what: roles, the permissions they grant, and the permission every gRPC
method needs.

tfmesh's own RPCs declare their permission in their `.proto` (shared.rpc_methods); the
services whose protos are not ours (KServe v2, TF Serving, health, reflection) have it in
the table here. The inference service's REST routes declare theirs in their route table
(shared.rest_routes). A method without one is refused (tests/security/test_permissions.py fails
when a served method has none). OPEN methods (health, liveness, reflection) need no
credentials, so probes and tools keep working."""

from __future__ import annotations

from shared.rpc_methods import declared_permission, tfmesh_methods

OPEN = "open"
READ = "read"
PREDICT = "predict"
INGEST = "ingest"
TRAIN = "train"
REGISTER = "register"
DEPLOY = "deploy"
ADMIN = "admin"
PERMISSIONS = (READ, PREDICT, INGEST, TRAIN, REGISTER, DEPLOY, ADMIN)

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ}),
    "predictor": frozenset({READ, PREDICT}),
    "trainer": frozenset({READ, INGEST, TRAIN, REGISTER}),
    "deployer": frozenset({READ, PREDICT, DEPLOY}),
    "admin": frozenset(PERMISSIONS),
}

# Services whose protos are not tfmesh's, so cannot declare their permissions.
_THIRD_PARTY: dict[str, dict[str, str]] = {
    "inference.GRPCInferenceService": {
        "ServerLive": OPEN,
        "ServerReady": OPEN,
        "ModelReady": READ,
        "ServerMetadata": READ,
        "ModelMetadata": READ,
        "ModelInfer": PREDICT,
        "ModelStreamInfer": PREDICT,
        "ModelConfig": READ,
        "ModelStatistics": READ,
    },
    "tensorflow.serving.PredictionService": {
        "Classify": PREDICT,
        "Regress": PREDICT,
        "Predict": PREDICT,
        "MultiInference": PREDICT,
        "GetModelMetadata": READ,
    },
    "tensorflow.serving.ModelService": {
        "GetModelStatus": READ,
        "HandleReloadConfigRequest": ADMIN,
    },
    "grpc.health.v1.Health": {"Check": OPEN, "Watch": OPEN, "List": OPEN},
    "grpc.reflection.v1alpha.ServerReflection": {"ServerReflectionInfo": OPEN},
}

METHOD_PERMISSIONS: dict[str, str] = {
    **{
        path: permission
        for path in tfmesh_methods()
        if (permission := declared_permission(path)) is not None
    },
    **{
        f"/{service}/{method}": permission
        for service, methods in _THIRD_PARTY.items()
        for method, permission in methods.items()
    },
}


def permissions_of(roles: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)
