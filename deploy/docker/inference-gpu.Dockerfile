# syntax=docker/dockerfile:1
# The inference image for GPU nodes: the CPU image's code on TensorFlow's CUDA base, whose
# `tensorflow` replaces `tensorflow-cpu` (installing both would shadow the GPU build).
# Build from the repository root:
#   docker build -f deploy/docker/inference-gpu.Dockerfile -t tfmesh/inference-gpu:0.1.0 .
# The k8s `gpu` component selects this image and asks for one nvidia.com/gpu.

FROM tensorflow/tensorflow:2.21.0-gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.txt requirements.lock ./
RUN grep -v '^tensorflow-cpu==' requirements.txt > requirements-gpu.txt \
    && grep -v '^tensorflow-cpu==' requirements.lock > constraints-gpu.txt \
    && python3 -m pip install -r requirements-gpu.txt -c constraints-gpu.txt \
    && python3 -m pip install --no-deps tensorflow-serving-api==2.21.0
COPY protos/ protos/
RUN mkdir -p /app/gen && python3 -m grpc_tools.protoc -I protos \
        --python_out=/app/gen --grpc_python_out=/app/gen $(find protos -name '*.proto')
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
