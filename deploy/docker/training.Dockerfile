# syntax=docker/dockerfile:1
# The training image: `python -m services.training.server` as a non-root user on a slim base.
# Build from the repository root: docker build -f deploy/docker/training.Dockerfile -t tfmesh/training:0.1.0 .
# Dependencies are this service's own set, training.lock (pinned, with hashes: `make lock`);
# the protobuf package is generated in the build stage by grpc_tools.protoc from a venv of
# its own (protoc.lock), as `make proto` does (less the .pyi), so the tool stays out.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY deploy/docker/protoc.lock deploy/docker/training.lock ./
RUN python -m venv /protoc && /protoc/bin/pip install --require-hashes -r protoc.lock \
    && python -m venv /venv && /venv/bin/pip install --require-hashes -r training.lock
COPY protos/ protos/
RUN mkdir /gen && /protoc/bin/python -m grpc_tools.protoc -I protos \
        --python_out=/gen --grpc_python_out=/gen $(find protos -name '*.proto')

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 tfmesh \
    && useradd --system --uid 10001 --gid tfmesh --no-create-home --shell /usr/sbin/nologin tfmesh
COPY --from=build /venv /venv
COPY --from=build /gen /app/gen
COPY shared/ /app/shared/
COPY services/__init__.py /app/services/__init__.py
# Its database's upgrade (python -m cli.databases training), run by the Kubernetes upgrade Job.
COPY cli/__init__.py cli/databases.py /app/cli/
COPY services/training/ /app/services/training/
COPY services/registry/ /app/services/registry/
ENV PATH=/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TFMESH_HOME=/var/lib/tfmesh \
    TFMESH_TRAINING_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
EXPOSE 50052 9090
ENTRYPOINT ["python", "-m", "services.training.server"]
