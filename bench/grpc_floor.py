"""The floor of a Python gRPC server on this machine: the grpcio that tfmesh and MLServer
both run on, answering KServe v2 `ModelInfer` with one reply built once, with no parsing,
no model and no interceptor, as a `grpc.aio` server (tfmesh's and MLServer's kind) or a
synchronous one on a thread pool. What it spends per request is the least a server
written on grpcio's Python API can; the overhead bench reports it beside tfmesh and the
peers, so their gRPC figures read against it.

    python -m bench.grpc_floor --port N [--threads T]   (T > 0: synchronous, T threads)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from bench.peer_process import PeerServer

SERVICE = "inference.GRPCInferenceService"


def canned_reply(model: str, features: int) -> bytes:
    """A ModelInferResponse of one row of `features` float32 zeros, serialized once."""
    from inference import grpc_predict_v2_pb2 as v2

    reply = v2.ModelInferResponse(model_name=model, model_version="1")
    reply.outputs.add(name="y", datatype="FP32", shape=[1, features])
    reply.raw_output_contents.append(np.zeros((1, features), np.float32).tobytes())
    return reply.SerializeToString()


def handler(infer: Callable) -> grpc.GenericRpcHandler:
    # No (de)serializers: the request stays bytes and the reply is already bytes.
    return grpc.method_handlers_generic_handler(
        SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    )


async def serve_aio(address: str, reply: bytes) -> None:
    async def infer(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return reply

    server = grpc.aio.server(handlers=[handler(infer)])
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def serve_sync(address: str, reply: bytes, threads: int) -> None:
    def infer(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        return reply

    pool = futures.ThreadPoolExecutor(max_workers=threads)
    server = grpc.server(pool, handlers=[handler(infer)])
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


def start(
    work: Path, model: str, features: int, free_port: Callable[[], int], threads: int = 0
) -> PeerServer:
    """The floor server on loopback (`threads` > 0: synchronous), once it accepts calls."""
    port = free_port()
    log = work / "grpc-floor.log"
    command = [sys.executable, "-m", "bench.grpc_floor", "--port", str(port)]
    command += ["--model", model, "--features", str(features), "--threads", str(threads)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = PeerServer(process, http_address="", grpc_address=f"127.0.0.1:{port}")
    with grpc.insecure_channel(server.grpc_address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=60)
        except grpc.FutureTimeoutError:
            server.stop()
            raise RuntimeError(f"the gRPC floor server did not start; see {log}") from None
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="noop")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="> 0: synchronous server")
    args = parser.parse_args()
    address = f"127.0.0.1:{args.port}"
    reply = canned_reply(args.model, args.features)
    if args.threads:
        serve_sync(address, reply, args.threads)
    else:
        asyncio.run(serve_aio(address, reply))


if __name__ == "__main__":
    main()
