"""Who may do what: roles, the permissions they grant, and the one table that gives every
gRPC method (and every inference REST route) the permission it needs.

A method missing from `METHOD_PERMISSIONS` is refused (tests/shared/test_permissions.py
fails when a served method is missing). OPEN methods (health, liveness, reflection) need
no credentials, so probes and tools keep working."""

from __future__ import annotations

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

_BY_SERVICE: dict[str, dict[str, str]] = {
    "tfmesh.data.v1.DataService": {
        "UploadDataset": INGEST,
        "ImportSample": INGEST,
        "GetDatasetVersion": READ,
        "ListDatasetVersions": READ,
        "DeleteDatasetVersion": ADMIN,
        "GetStatistics": READ,
        "ReadBatches": READ,
        "GetShards": READ,
    },
    "tfmesh.training.v1.TrainingService": {
        "SubmitJob": TRAIN,
        "GetJob": READ,
        "ListJobs": READ,
        "CancelJob": TRAIN,
        "WatchJob": READ,
    },
    "tfmesh.registry.v1.RegistryService": {
        "CreateModel": REGISTER,
        "GetModel": READ,
        "ListModels": READ,
        "UploadVersion": REGISTER,
        "GetVersion": READ,
        "ListVersions": READ,
        "DeleteVersion": ADMIN,
        "DownloadArtifact": READ,
        # Moving an alias; overriding the promotion gate needs ADMIN on top (registry).
        "SetAlias": DEPLOY,
        "DeleteAlias": DEPLOY,
        "ListAliases": READ,
        "ListAliasHistory": READ,
        "Watch": READ,
        "SetRolloutPolicy": DEPLOY,
        "GetRolloutPolicy": READ,
        "DeleteRolloutPolicy": DEPLOY,
        "GetRollout": READ,
        "PauseRollout": DEPLOY,
        "ResumeRollout": DEPLOY,
        "AbortRollout": DEPLOY,
    },
    "tfmesh.inference.v1.InferenceService": {
        "Predict": PREDICT,
        "PredictStream": PREDICT,
        "GetModelStatus": READ,
        "ListModels": READ,
        "GetDrift": READ,
        "ReportFeedback": PREDICT,
        "GetVersionStats": READ,
    },
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
    f"/{service}/{method}": permission
    for service, methods in _BY_SERVICE.items()
    for method, permission in methods.items()
}

# The inference service's REST routes (services.inference.rest.app), by template.
REST_PERMISSIONS: dict[str, str] = {
    "/v2": READ,
    "/v2/health/live": OPEN,
    "/v2/health/ready": OPEN,
    "/v2/models/stats": READ,
    "/v2/models/{model}[/versions/{version}]": READ,
    "/v2/models/{model}[/versions/{version}]/ready": READ,
    "/v2/models/{model}[/versions/{version}]/config": READ,
    "/v2/models/{model}[/versions/{version}]/stats": READ,
    "/v2/models/{model}[/versions/{version}]/infer": PREDICT,
    "/v1/models/{model}[/versions/{version}|/labels/{label}]": READ,
    "/v1/models/{model}[/versions/{version}|/labels/{label}]/metadata": READ,
    "/v1/models/{model}[/versions/{version}|/labels/{label}]:predict": PREDICT,
    "/v1/models/{model}[/versions/{version}|/labels/{label}]:{verb}": PREDICT,
}


def permissions_of(roles: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)
