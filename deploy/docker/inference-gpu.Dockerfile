# syntax=docker/dockerfile:1
# The inference image for GPU nodes: the CPU image's code on TensorFlow's CUDA base, whose
# `tensorflow` replaces `tensorflow-cpu` (installing both would shadow the GPU build).
# Build from the repository root:
#   docker build -f deploy/docker/inference-gpu.Dockerfile -t tfmesh/inference-gpu:0.1.0 .
# The k8s `gpu` component selects this image and asks for one nvidia.com/gpu.

FROM tensorflow/tensorflow:2.21.0-gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# inference-gpu.lock is the inference service's set less TensorFlow (the `serving` extra).
COPY deploy/docker/inference-gpu.lock requirements-tfserving.lock ./
RUN python3 -m pip install --require-hashes -r inference-gpu.lock \
    && python3 -m pip install --require-hashes --no-deps -r requirements-tfserving.lock
# The code generator lives only as long as the one step that uses it.
COPY deploy/docker/protoc.lock ./
COPY protos/ protos/
RUN python3 -m pip install --require-hashes --target /tmp/protoc -r protoc.lock \
    && mkdir -p /app/gen && PYTHONPATH=/tmp/protoc python3 -m grpc_tools.protoc -I protos \
        --python_out=/app/gen --grpc_python_out=/app/gen $(find protos -name '*.proto') \
    && rm -rf /tmp/protoc
RUN groupadd --system --gid 10001 tfmesh \
    && useradd --system --uid 10001 --gid tfmesh --no-create-home --shell /usr/sbin/nologin tfmesh
COPY shared/ /app/shared/
COPY services/__init__.py /app/services/__init__.py
COPY services/inference/ /app/services/inference/
COPY services/registry/ /app/services/registry/
ENV PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TFMESH_HOME=/var/lib/tfmesh \
    TFMESH_INFERENCE_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
EXPOSE 50054 9090
ENTRYPOINT ["python3", "-m", "services.inference.server"]
