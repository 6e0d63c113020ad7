"""gRPC adapter of KServe v2's `inference.GRPCInferenceService` onto the inference core."""

from __future__ import annotations

from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc
from services.inference import kserve_converters as c
from services.inference.converters import deadline_of
from services.inference.core import InferenceCore
from services.inference.model_manager import VersionState

SERVER_NAME = "tfmesh"
SERVER_VERSION = "0.1.0"


class KServeServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: InferenceCore) -> None:
        self._core = core

    async def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        ready = all(served.table.by_label for served in self._core.models())
        return pb.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        if not self._core.manager.knows(request.name):
            return pb.ModelReadyResponse(ready=False)
        served = self._core.model(request.name)
        version, label = c.version_pin(request.version, "version")
        if version:
            ready = version in served.table.by_version
        else:
            ready = (label or "production") in served.table.by_label
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context
    ) -> pb.ModelMetadataResponse:
        version, label = c.version_pin(request.version, "version")
        target = self._core.resolve(request.name, version, label)
        served = self._core.model(request.name)
        signature = target.runtime.signature
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=[
                str(v)
                for v, record in sorted(served.records.items())
                if record.state is VersionState.AVAILABLE
            ],
            platform=f"tfmesh_{target.runtime.name}",
            inputs=[c.tensor_metadata(s) for s in signature.inputs],
            outputs=[c.tensor_metadata(s) for s in signature.outputs],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        version, label = c.version_pin(request.model_version, "model_version")
        inputs, indexes = c.inputs_from_proto(request)
        prediction = await self._core.predict(
            request.model_name,
            inputs,
            version=version,
            label=label,
            deadline=deadline_of(context),
            output_filter=[output.name for output in request.outputs],
            field_of=lambda name: c.input_field(indexes[name]) if name in indexes else "inputs",
            output_filter_field="outputs",
        )
        return c.response_to_proto(prediction, request)
