#!/usr/bin/env bash
# The inference GPU check (issue 5), one command on each side.
#
# On a CPU machine with the project set up and PyPI reachable, build the bundle the GPU
# machine needs (the .keras artifacts, the generated protos, and the wheels of the few
# pure-Python and small binary packages the keras_jax serving path imports):
#
#     bash bench/gpu_check.sh prepare [BUNDLE]      # BUNDLE defaults to .tfmesh/gpu_bundle
#
# On a machine with an NVIDIA GPU where JAX with CUDA is installed and TensorFlow is not
# (no network needed), with the repository and the bundle beside it:
#
#     bash bench/gpu_check.sh [run] [BUNDLE]
#
# `run` installs the bundle's wheels into a folder beside the system's JAX, starts the
# inference service with the Keras-on-JAX runtime on the bundle's artifacts, fails unless
# the weights live on the GPU, runs the benchmark table with N = 1, 8, 64, 256, prints it,
# and checks the GPU targets (results under bench/results/inference_keras_jax_gpu.*).
# GPU_PYTHONS picks the Python versions `prepare` fetches binary wheels for.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMAND="${1:-run}"
BUNDLE="$(realpath -m "${2:-$REPO/.tfmesh/gpu_bundle}")"
GPU_PYTHONS="${GPU_PYTHONS:-3.11 3.12 3.13}"
CLIENTS="${GPU_CHECK_CLIENTS:-1,8,64,256}"
SECONDS_PER_POINT="${GPU_CHECK_SECONDS:-5}"

# What `services.inference.server` imports on the keras_jax path (the model owner, and the
# front ends with their REST server), less what a JAX install
# brings (jax, jaxlib, numpy, ml_dtypes, opt_einsum, scipy); `prepare` pins each to the
# version this checkout's venv has (so, to requirements.lock).
WHEELS=(
  absl-py annotated-types certifi charset-normalizer click googleapis-common-protos grpcio
  grpcio-health-checking grpcio-reflection grpcio-status h11 h5py httptools idna keras
  markdown-it-py mdurl namex opentelemetry-api opentelemetry-instrumentation
  opentelemetry-instrumentation-grpc opentelemetry-sdk opentelemetry-semantic-conventions
  optree orjson packaging prometheus-client protobuf py-consul pydantic pydantic-core
  pydantic-settings pygments pysimdjson python-dotenv python-json-logger requests rich
  tenacity typing-extensions typing-inspection urllib3 uvicorn wrapt
)

prepare() {
  local python="$REPO/.venv/bin/python"
  mkdir -p "$BUNDLE/wheels"
  "$python" "$REPO/bench/inference_bench.py" artifacts --out "$BUNDLE/artifacts"
  rm -rf "$BUNDLE/gen" && cp -r "$REPO/gen" "$BUNDLE/gen"
  "$python" -c 'import sys, importlib.metadata as m
print("\n".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${WHEELS[@]}" \
    > "$BUNDLE/requirements.txt"
  for version in $GPU_PYTHONS; do
    "$python" -m pip download -q --no-deps --only-binary=:all: --dest "$BUNDLE/wheels" \
      --python-version "$version" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -r "$BUNDLE/requirements.txt"
  done
  du -sh "$BUNDLE"/*
  echo "bundle ready: $BUNDLE (carry it with the repository to the GPU machine)"
}

run() {
  [ -d "$BUNDLE/wheels" ] || { echo "no bundle at $BUNDLE: run '$0 prepare' on a CPU machine" >&2; exit 2; }
  command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "warning: nvidia-smi not found" >&2
  local system_python="${GPU_CHECK_PYTHON:-python3}"
  "$system_python" -c 'import jax; print("JAX", jax.__version__, jax.devices())'
  if "$system_python" -c 'import tensorflow' 2>/dev/null; then
    echo "note: TensorFlow is importable here; the check does not need it" >&2
  fi
  # A --target folder rather than a venv: JAX may live in a venv or conda env of its own,
  # which a nested venv would not see.
  local site="$BUNDLE/site-$("$system_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [ -d "$site" ] || "$system_python" -m pip install -q --no-index --no-deps \
    --find-links "$BUNDLE/wheels" --target "$site" -r "$BUNDLE/requirements.txt"
  export PYTHONPATH="$REPO:$BUNDLE/gen:$site${PYTHONPATH:+:$PYTHONPATH}"
  export KERAS_BACKEND=jax
  # Several versions share the card with the load generators; JAX's default grab of 75%
  # of GPU memory up front is not needed for models of this size.
  export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
  "$system_python" "$REPO/bench/inference_bench.py" run --runtime keras_jax \
    --artifacts "$BUNDLE/artifacts" --clients "$CLIENTS" --seconds "$SECONDS_PER_POINT" \
    --driver python --load-procs "${GPU_CHECK_LOAD_PROCS:-8}" \
    --off-threads "${GPU_CHECK_OFF_THREADS:-16}" --expect-device "${GPU_CHECK_DEVICE:-gpu}" \
    --gpu
}

case "$COMMAND" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 [prepare|run] [BUNDLE]" >&2; exit 2 ;;
esac
