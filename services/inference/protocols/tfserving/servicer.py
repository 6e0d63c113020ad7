"""TF Serving's `PredictionService` (Predict, GetModelMetadata) and `ModelService`
(GetModelStatus) over gRPC, asking the TF Serving data plane, so TF Serving clients work
unchanged, version labels included. Importing it imports TensorFlow (through the stubs of
`tensorflow-serving-api`); the server imports it only where TensorFlow is installed."""

from __future__ import annotations

from google.protobuf import any_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from services.inference.catalog import VersionState, VersionView
from services.inference.pipeline import Pipeline
from services.inference.protocols.deadlines import deadline_of
from services.inference.protocols.tfserving import converters as c
from services.inference.protocols.tfserving.dataplane import TFServingDataPlane
from shared.errors import invalid
from shared.serving_names import SIGNATURE

SIGNATURE_DEF_FIELD = "signature_def"
STATES = {
    VersionState.LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
    VersionState.AVAILABLE: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    VersionState.UNLOADING: get_model_status_pb2.ModelVersionStatus.UNLOADING,
    VersionState.FAILED: get_model_status_pb2.ModelVersionStatus.END,
    VersionState.END: get_model_status_pb2.ModelVersionStatus.END,
}
# The services' own descriptor modules: the stubs import only their messages' modules, so
# without these the descriptor pool (and so server reflection) would not know the services.
PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"
].full_name
REQUEST_ID_KEY = "x-request-id"
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._plane = TFServingDataPlane(pipeline)

    async def Predict(self, request: predict_pb2.PredictRequest, context):
        version, label = c.version_pin(request.model_spec)
        inputs = {
            name: c.ndarray_from_proto(tensor, c.input_field(name))
            for name, tensor in request.inputs.items()
        }
        prediction = await self._plane.predict(
            request.model_spec.name,
            inputs,
            version,
            label,
            output_filter=list(request.output_filter),
            request_id=dict(context.invocation_metadata() or ()).get(REQUEST_ID_KEY, ""),
            deadline=deadline_of(context),
        )
        # TF Serving's messages have no request id: it travels as metadata both ways.
        context.set_trailing_metadata(((REQUEST_ID_KEY, prediction.request_id),))
        return predict_pb2.PredictResponse(
            model_spec=c.model_spec(prediction.model, prediction.version),
            outputs=c.outputs_to_proto(prediction),
        )

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context
    ):
        fields = list(request.metadata_field)
        if fields != [SIGNATURE_DEF_FIELD]:
            raise invalid("metadata_field", f"only {SIGNATURE_DEF_FIELD!r} is served, got {fields}")
        version, label = c.version_pin(request.model_spec)
        target = self._plane.signature_of(request.model_spec.name, version, label)
        assert target.signature is not None  # routable versions are loaded
        signatures = get_model_metadata_pb2.SignatureDefMap()
        signatures.signature_def[SIGNATURE].CopyFrom(c.signature_def_map(target.signature))
        packed = any_pb2.Any()
        packed.Pack(signatures)
        return get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=c.model_spec(target.model, target.version),
            metadata={SIGNATURE_DEF_FIELD: packed},
        )


def _version_status(view: VersionView) -> get_model_status_pb2.ModelVersionStatus:
    failed = view.state is VersionState.FAILED
    return get_model_status_pb2.ModelVersionStatus(
        version=view.version,
        state=STATES[view.state],
        status=status_pb2.StatusProto(
            error_code=error_codes_pb2.UNKNOWN if failed else error_codes_pb2.OK,
            error_message=view.reason if failed else "",
        ),
    )


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._plane = TFServingDataPlane(pipeline)

    async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        version, label = c.version_pin(request.model_spec)
        views = self._plane.statuses(request.model_spec.name, version, label, "model_spec.version")
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[_version_status(view) for view in views]
        )


def register(server, pipeline: Pipeline) -> list[str]:
    """Add both TF Serving services to `server`; returns their full names."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(pipeline), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(pipeline), server)
    return [PREDICTION_SERVICE, MODEL_SERVICE]
