"""Start-up of the inference service: `python -m services.inference.server [ROLE]`.

With `TFMESH_INFERENCE_FRONTENDS=0` one process does everything: it loads the static
models, follows the registry for the others, and serves three protocols on one port:
`tfmesh.inference.v1`, KServe v2 (with Triton's extensions), and TF Serving's APIs when
TensorFlow is importable (their stubs import it; a JAX-only machine serves the other
two). With N > 0 (the default: one per usable core) this process is the supervisor
(`services.inference.dataplane.supervisor`), which starts the roles below as processes
and keeps them running:

- `owner`: holds the models and their batchers and serves front ends over a Unix socket;
- `frontend`: a gRPC server on the shared port, and the REST API on the shared HTTP port
  (both SO_REUSEPORT), reaching the owner through shared memory
  (`services.inference.dataplane`)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from services.inference.baselines import LineageBaselines
from services.inference.bridge.front import serve_front_end_calls, start_behind_envoy
from services.inference.config import model_specs
from services.inference.dataplane.link import OwnerLink
from services.inference.dataplane.owner import ModelOwner
from services.inference.dataplane.slab import Slab
from services.inference.execution import LocalSubmitter
from services.inference.feedback import PredictionLog
from services.inference.model_manager import DriftOptions, ModelManager
from services.inference.pipeline import Pipeline
from services.inference.protocols.kserve.servicer import KServeServicer
from services.inference.protocols.tfmesh.servicer import InferenceServicer
from services.inference.protocols.tfserving import protos as tfserving_protos
from services.inference.registry_source import RegistrySource
from services.inference.rest.app import RestApi
from services.inference.rest.serve import start_http
from services.inference.routing import Router
from services.inference.settings import InferenceSettings, usable_cores
from services.registry.client import RegistryClient
from shared.auth import authenticator_for
from shared.channels import check_peer_tls, peer_channel
from shared.heap import freeze_heap
from shared.server import RunningServer, serve, serve_until_signalled, signalled, start_server
from shared.settings import load_settings
from shared.telemetry import Telemetry, setup_telemetry
from tfmesh.inference.v1 import inference_pb2, inference_pb2_grpc

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
KSERVE_SERVICE = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
log = logging.getLogger(__name__)

Stop = Callable[[], Awaitable[None]]


def _tfserving_registrar() -> Callable[[grpc.aio.Server, Pipeline], list[str]] | None:
    try:
        from services.inference.protocols.tfserving import servicer as tfserving_servicer
    except ImportError as error:
        log.info("TF Serving API off: TensorFlow is not importable", extra={"error": str(error)})
        return None
    return tfserving_servicer.register


def _servicers(
    pipeline: Pipeline, settings: InferenceSettings, names: list[str]
) -> Callable[[grpc.aio.Server], None]:
    """The `register` callback of `start_server`: every protocol's servicer on `pipeline`;
    appends the services' full names to `names`."""
    tfserving = _tfserving_registrar()
    names += [INFERENCE_SERVICE, KSERVE_SERVICE]

    def register(server: grpc.aio.Server) -> None:
        limit = settings.stream_max_in_flight
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(pipeline, limit), server
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(pipeline, limit), server
        )
        if tfserving is not None:
            names.extend(tfserving(server, pipeline))

    return register


def compute_threads(settings: InferenceSettings) -> tuple[int, int]:
    """TensorFlow's intra- and inter-op threads: the cores the front ends leave, or the
    settings' overrides."""
    left = max(1, usable_cores() - settings.frontends)
    return settings.intra_op_threads or left, settings.inter_op_threads or left


def configure_threads(settings: InferenceSettings) -> None:
    """Size the frameworks' thread pools before a runtime imports them (explicit
    environment variables win)."""
    intra, inter = compute_threads(settings)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(intra))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(inter))
    if intra == 1:
        os.environ.setdefault(
            "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )


async def start_models(
    settings: InferenceSettings, telemetry: Telemetry
) -> tuple[ModelManager, Stop]:
    """Load the static models and follow the registry; the manager, and how to stop it."""
    specs = model_specs(settings)
    registry_models = [spec.name for spec in specs if spec.from_registry]
    channels: list[grpc.aio.Channel] = []
    source = None
    drift = None
    if registry_models:
        peers = {"registry": settings.registry_addr}
        if settings.data_addr:
            peers["data"] = settings.data_addr
        await check_peer_tls(peers, settings.tls_files())
        channels.append(peer_channel("registry", settings.registry_addr, settings, telemetry))
        registry = RegistryClient(channels[-1])
        source = RegistrySource(
            registry,
            settings.home / "inference" / "artifacts",
            registry_models,
            max_backoff_s=settings.registry_max_backoff_s,
        )
        if settings.data_addr and settings.drift_sampling_rate > 0:
            channels.append(peer_channel("data", settings.data_addr, settings, telemetry))
            drift = DriftOptions(
                LineageBaselines(registry, channels[-1]),
                settings.drift_sampling_rate,
                settings.drift_window_rows,
            )
    tracer = telemetry.tracer("tfmesh.inference")
    manager = ModelManager(
        specs,
        source=source,
        tracer=tracer,
        settle_s=settings.swap_settle_s,
        drift=drift,
        feedback=functools.partial(
            PredictionLog, settings.feedback_max_predictions, settings.feedback_retention_s
        ),
    )
    await manager.start()

    async def stop() -> None:
        await manager.stop()
        for channel in channels:
            await channel.close()

    return manager, stop


async def start_inference(
    settings: InferenceSettings, telemetry: Telemetry
) -> tuple[RunningServer, Pipeline]:
    """The single-process server: models and servicers in this process."""
    manager, stop = await start_models(settings, telemetry)
    router = Router()
    pipeline = Pipeline(
        LocalSubmitter(manager, router), router, telemetry.tracer("tfmesh.inference")
    )
    names: list[str] = []
    register = _servicers(pipeline, settings, names)
    if settings.grpc_front == "envoy":
        running = await start_behind_envoy(settings, telemetry, register, names)
    else:
        running = await start_server(settings, telemetry, register, names)
    running.on_stop(stop)
    await _serve_rest(running, pipeline, settings, reuse_port=False)
    return running, pipeline


async def _serve_rest(
    running: RunningServer, pipeline: Pipeline, settings: InferenceSettings, reuse_port: bool
) -> None:
    """REST beside gRPC, on the HTTP port (unless it is -1), stopped with the server."""
    if settings.http_port < 0:
        return
    api = RestApi(pipeline, settings.max_message_bytes, authenticator_for(settings))
    http = await start_http(
        api, settings.host, settings.http_port, reuse_port, settings.tls_files()
    )
    running.http_port = http.port
    running.on_stop(http.stop)


async def start_owner(settings: InferenceSettings, telemetry: Telemetry, address: str) -> Stop:
    """The model owner: models, batchers, and front ends served on `address`."""
    manager, stop_models = await start_models(settings, telemetry)
    owner = ModelOwner(manager, Router())
    await owner.start(address)

    async def stop() -> None:
        await owner.stop()
        await stop_models()

    return stop


async def start_frontend(
    settings: InferenceSettings,
    telemetry: Telemetry,
    address: str,
    index: int,
    bridge_socket: Path | None = None,
) -> tuple[RunningServer, Pipeline]:
    """A front end serving through the owner at `address`. It joins the shared port
    (SO_REUSEPORT) only once the owner has answered, so a starting service refuses
    connections rather than failing calls; later, while the owner is away, its health
    says NOT_SERVING and its calls fail with UNAVAILABLE."""
    slab = Slab.create(settings.slab_bytes, f"tfmesh-inference-frontend-{index}")
    link = OwnerLink(address, slab, index)
    await link.start()
    await link.wait_ready(None)
    pipeline = Pipeline(link, tracer=telemetry.tracer("tfmesh.inference"))
    names: list[str] = []
    register = _servicers(pipeline, settings, names)
    if bridge_socket is not None:
        # Behind the supervisor's Envoy: grpc.aio on its loopback port, calls on the socket.
        running = await serve_front_end_calls(settings, telemetry, register, names, bridge_socket)
    else:
        running = await start_server(settings, telemetry, register, names, reuse_port=True)
    await _serve_rest(running, pipeline, settings, reuse_port=True)
    updates: set[asyncio.Task[None]] = set()

    def on_ready_change(ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *names]:
            task = asyncio.create_task(running.health.set(name, status))
            updates.add(task)
            task.add_done_callback(updates.discard)

    link.on_ready_change(on_ready_change)
    running.on_stop(link.stop)
    return running, pipeline


# --- process roles -------------------------------------------------------------------------


async def _serve_single(settings: InferenceSettings) -> None:
    configure_threads(settings)
    telemetry = setup_telemetry("inference")
    running, _ = await start_inference(settings, telemetry)
    await serve(running, settings, "inference")
    telemetry.shutdown()


async def _serve_owner(settings: InferenceSettings, address: str) -> None:
    configure_threads(settings)
    telemetry = setup_telemetry("inference")
    stop = await start_owner(settings, telemetry, address)
    freeze_heap()
    await signalled()
    await stop()
    telemetry.shutdown()


async def _serve_frontend(
    settings: InferenceSettings, address: str, index: int, bridge_socket: Path | None
) -> None:
    tfserving_protos.import_messages_only()
    telemetry = setup_telemetry("inference")
    running, _ = await start_frontend(settings, telemetry, address, index, bridge_socket)
    await serve_until_signalled(running, settings.shutdown_grace_s)
    telemetry.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.inference.server")
    parser.add_argument("role", nargs="?", default="serve", choices=["serve", "owner", "frontend"])
    parser.add_argument("--socket", help="the owner's Unix socket (owner and frontend roles)")
    parser.add_argument("--index", type=int, default=0, help="the front end's number")
    parser.add_argument("--parent", type=int, help="the supervisor's pid (child roles)")
    parser.add_argument(
        "--bridge-socket", type=Path, help="a front end's socket for Envoy's bridged calls"
    )
    args = parser.parse_args(argv)
    if args.parent is not None:
        from services.inference.dataplane.supervisor import die_with_parent

        die_with_parent(args.parent)
    settings = load_settings(InferenceSettings)
    if args.role == "owner":
        asyncio.run(_serve_owner(settings, args.socket))
    elif args.role == "frontend":
        asyncio.run(_serve_frontend(settings, args.socket, args.index, args.bridge_socket))
    elif settings.frontends == 0:
        asyncio.run(_serve_single(settings))
    else:
        from services.inference.dataplane.supervisor import Supervisor

        sys.exit(asyncio.run(Supervisor(settings).run()))


if __name__ == "__main__":
    main()
