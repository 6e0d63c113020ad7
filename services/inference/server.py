"""Start-up of the inference service: `python -m services.inference.server`.

Reads the settings and the model config, loads the static models, starts following the
registry for the others, and serves three protocols on one port: `tfmesh.inference.v1`,
KServe v2, and TF Serving's APIs when TensorFlow is importable (their stubs import it; a
JAX-only machine serves the other two)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from services.inference.config import model_specs
from services.inference.core import InferenceCore
from services.inference.kserve_servicer import KServeServicer
from services.inference.model_manager import ModelManager
from services.inference.registry_source import RegistrySource
from services.inference.routing import Router
from services.inference.servicer import InferenceServicer
from services.inference.settings import InferenceSettings
from services.registry.client import RegistryClient
from shared.channels import open_channel
from shared.server import RunningServer, serve, start_server
from shared.settings import load_settings
from shared.telemetry import Telemetry, setup_telemetry
from tfmesh.inference.v1 import inference_pb2, inference_pb2_grpc

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
KSERVE_SERVICE = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
log = logging.getLogger(__name__)


def _tfserving_registrar() -> Callable[[grpc.aio.Server, InferenceCore], list[str]] | None:
    try:
        from services.inference import tfserving_servicer
    except ImportError as error:
        log.info("TF Serving API off: TensorFlow is not importable", extra={"error": str(error)})
        return None
    return tfserving_servicer.register


async def start_inference(
    settings: InferenceSettings, telemetry: Telemetry
) -> tuple[RunningServer, InferenceCore]:
    """Load the static models, follow the registry, serve; used by `main` and by tests."""
    specs = model_specs(settings)
    registry_models = [spec.name for spec in specs if spec.from_registry]
    channel = None
    source = None
    if registry_models:
        channel = open_channel(settings.registry_addr, telemetry)
        source = RegistrySource(
            RegistryClient(channel),
            settings.home / "inference" / "artifacts",
            registry_models,
            max_backoff_s=settings.registry_max_backoff_s,
        )
    tracer = telemetry.tracer("tfmesh.inference")
    manager = ModelManager(specs, source=source, tracer=tracer, settle_s=settings.swap_settle_s)
    core = InferenceCore(manager, Router(), tracer)
    await manager.start()
    tfserving = _tfserving_registrar()
    service_names = [INFERENCE_SERVICE, KSERVE_SERVICE]

    def register(server: grpc.aio.Server) -> None:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(core), server)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(core), server
        )
        if tfserving is not None:
            service_names.extend(tfserving(server, core))

    running = await start_server(settings, telemetry, register, service_names)
    running.on_stop(manager.stop)
    if channel is not None:
        running.on_stop(channel.close)
    return running, core


async def main() -> None:
    settings = load_settings(InferenceSettings)
    telemetry = setup_telemetry("inference")
    running, _ = await start_inference(settings, telemetry)
    await serve(running, settings, "inference")
    telemetry.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
