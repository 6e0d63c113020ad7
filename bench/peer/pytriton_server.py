"""The benchmarks' Triton peer: NVIDIA Triton Inference Server (the C++ server that PyPI's
nvidia-pytriton ships) with a model bound as a Python callable: the benchmark's SavedModel
(its serving signature, under Triton's dynamic batcher), or a no-op that returns its
input. Triton's HTTP and gRPC front ends are C++; pytriton runs the callable in a Python
process of its own and hands it whole batches.

Run by bench/triton_peer.py with the interpreter of `.venv-pytriton` (`make pytriton`),
never imported by tfmesh's code:

    python pytriton_server.py --name cnn --saved-model DIR --http-port P --grpc-port Q \\
        --metrics-port M [--max-batch-size 64] [--queue-delay-us 2000] [--instances 1]
    python pytriton_server.py --name noop --noop-features 64 ...
"""

import argparse

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def saved_model_callable(path):
    """The SavedModel's serving signature as a batch callable, with its tensor specs."""
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    ((name, spec),) = serve.structured_input_signature[1].items()
    outputs = serve.structured_outputs

    @batch
    def infer(**inputs):
        answer = serve(**{name: tf.constant(next(iter(inputs.values())))})
        return {key: value.numpy() for key, value in answer.items()}

    return (
        infer,
        [Tensor(name="x", dtype=np.float32, shape=tuple(spec.shape[1:]))],
        [
            Tensor(name=key, dtype=np.float32, shape=tuple(value.shape[1:]))
            for key, value in outputs.items()
        ],
    )


def noop_callable(features):
    @batch
    def infer(x):
        return {"output_0": x}

    shape = (features,)
    return (
        infer,
        [Tensor(name="x", dtype=np.float32, shape=shape)],
        [Tensor(name="output_0", dtype=np.float32, shape=shape)],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--saved-model")
    parser.add_argument("--noop-features", type=int, default=0)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--queue-delay-us", type=int, default=0)
    parser.add_argument("--instances", type=int, default=1)
    args = parser.parse_args()
    if args.noop_features:
        made = [noop_callable(args.noop_features) for _ in range(args.instances)]
    else:
        made = [saved_model_callable(args.saved_model) for _ in range(args.instances)]
    batcher = DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=[infer for infer, _, _ in made],
            inputs=made[0][1],
            outputs=made[0][2],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=batcher),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
