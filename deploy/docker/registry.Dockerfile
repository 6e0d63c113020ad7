# syntax=docker/dockerfile:1
# The registry image: `python -m services.registry.server` as a non-root user on a slim base.
# Build from the repository root: docker build -f deploy/docker/registry.Dockerfile -t tfmesh/registry:0.1.0 .
# Dependencies are requirements.txt pinned by requirements.lock; the protobuf package is
# generated here from protos/ with grpc_tools.protoc, as `make proto` does (less the .pyi).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.txt requirements.lock ./
RUN python -m venv /venv \
    && /venv/bin/pip install -r requirements.txt -c requirements.lock
COPY protos/ protos/
RUN mkdir /gen && /venv/bin/python -m grpc_tools.protoc -I protos \
        --python_out=/gen --grpc_python_out=/gen $(find protos -name '*.proto')

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 tfmesh \
    && useradd --system --uid 10001 --gid tfmesh --no-create-home --shell /usr/sbin/nologin tfmesh
COPY --from=build /venv /venv
COPY --from=build /gen /app/gen
COPY shared/ /app/shared/
COPY services/__init__.py /app/services/__init__.py
COPY services/registry/ /app/services/registry/
ENV PATH=/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TFMESH_HOME=/var/lib/tfmesh \
    TFMESH_REGISTRY_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
EXPOSE 50053 9090
ENTRYPOINT ["python", "-m", "services.registry.server"]
