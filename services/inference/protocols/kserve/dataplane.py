"""KServe v2 (the Open Inference Protocol) with Triton's extensions, as the service means
it: liveness and readiness, server and model metadata, model configuration, statistics
and inference. Each answer is the protocol's protobuf message; the gRPC servicer returns
it as it is and the REST handlers write it as JSON, so the two transports cannot differ.
A version is a number or a label; field paths in errors are KServe's (inputs by their
place in the request)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from inference import grpc_predict_v2_pb2 as v2
from services.inference.catalog import VersionState
from services.inference.controls import Controls
from services.inference.pipeline import Pipeline, Prediction
from services.inference.protocols.kserve import triton
from services.inference.protocols.kserve.converters import (
    field_renamer,
    tensor_metadata,
    version_pin,
)
from shared.errors import InvalidArgument
from shared.serving_names import SERVER_NAME, SERVER_VERSION

EXTENSIONS = ["model_configuration", "statistics", "streaming"]


def platform_of(runtime: str) -> str:
    """The `platform` of a model's metadata and configuration: `tfmesh_<runtime>`."""
    return f"tfmesh_{runtime}"


class KServeDataPlane:
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def server_live(self) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    def server_ready(self) -> v2.ServerReadyResponse:
        ready = self._pipeline.ready() and self._pipeline.catalog().ready()
        return v2.ServerReadyResponse(ready=ready)

    def server_metadata(self) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    def model_ready(self, name: str, version: str) -> v2.ModelReadyResponse:
        if not self._pipeline.ready():
            return v2.ModelReadyResponse(ready=False)
        catalog = self._pipeline.catalog()
        if not catalog.knows(name):
            return v2.ModelReadyResponse(ready=False)
        number, label = version_pin(version, "version")
        return v2.ModelReadyResponse(ready=catalog.model(name).ready(number, label))

    def model_metadata(self, name: str, version: str) -> v2.ModelMetadataResponse:
        catalog = self._pipeline.catalog()
        target = catalog.resolve(name, *version_pin(version, "version"))
        assert target.signature is not None  # routable versions are loaded
        versions = catalog.model(name).versions
        return v2.ModelMetadataResponse(
            name=name,
            versions=[
                str(n)
                for n, view in sorted(versions.items())
                if view.state is VersionState.AVAILABLE
            ],
            platform=platform_of(target.runtime),
            inputs=[tensor_metadata(s) for s in target.signature.inputs],
            outputs=[tensor_metadata(s) for s in target.signature.outputs],
        )

    def model_config(self, name: str, version: str) -> v2.ModelConfigResponse:
        catalog = self._pipeline.catalog()
        target = catalog.resolve(name, *version_pin(version, "version"))
        config = triton.model_config(catalog.model(name), target, platform_of(target.runtime))
        return v2.ModelConfigResponse(config=config)

    async def model_statistics(self, name: str, version: str) -> v2.ModelStatisticsResponse:
        """Statistics of one model's versions (or one), or of every model when `name` is
        empty."""
        number, label = version_pin(version, "version")
        if label:
            number = self._pipeline.catalog().resolve(name, 0, label).version
        statistics = await self._pipeline.control(Controls.statistics, name, number)
        return v2.ModelStatisticsResponse(
            model_stats=[triton.model_statistics(s) for s in statistics]
        )

    async def infer(
        self,
        model: str,
        version: str,
        inputs: dict[str, np.ndarray],
        indexes: Mapping[str, int],
        outputs: Sequence[str],
        request_id: str,
        deadline: float | None = None,
    ) -> Prediction:
        number, label = version_pin(version, "model_version")
        try:
            return await self._pipeline.predict(
                model,
                inputs,
                version=number,
                label=label,
                deadline=deadline,
                output_filter=outputs,
                request_id=request_id,
            )
        except InvalidArgument as error:
            raise error.renamed(field_renamer(indexes)) from None
