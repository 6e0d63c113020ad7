"""The locks match pyproject.toml and each image gets only its service's set.

pyproject.toml declares the dependencies, one extra per service; `make lock` compiles
requirements.lock (everything) and deploy/docker/<image>.lock (one extra) with hashes.
Here: every pin carries hashes, every direct dependency of an extra is locked at the
version pyproject.toml names (so an edit without `make lock` fails), every Dockerfile
installs its own lock in hash-checking mode, the gateway's set has no TensorFlow, and what
a service's server imports at start comes from distributions in its image's lock."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.processes import REPO

DOCKER = REPO / "deploy" / "docker"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s\\]+)", re.MULTILINE)
IMAGES = {
    "data": ("data", "services.data.server"),
    "registry": ("registry", "services.registry.server"),
    "training": ("training", "services.training.server"),
    "inference": ("inference", "services.inference.server"),
    "inference-gpu": ("serving", None),
    "gateway": ("gateway", "gateway.server"),
    "protoc": ("protoc", "grpc_tools.protoc"),
}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    return {normal(name): version for name, version in PIN.findall(lock.read_text())}


def declared(extra: str | None) -> dict[str, str]:
    """The pinned direct dependencies of an extra (with the base ones), following
    `tfmesh[...]` references."""
    wanted = dict(_pinned(PROJECT["dependencies"]))
    pending, seen = [extra] if extra else [], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in PROJECT["optional-dependencies"][name]:
            if requirement.startswith("tfmesh["):
                pending += requirement[len("tfmesh[") : -1].split(",")
            else:
                wanted.update(_pinned([requirement]))
    return wanted


def _pinned(requirements: list[str]) -> list[tuple[str, str]]:
    found = []
    for requirement in requirements:
        name, version = requirement.split("==")
        found.append((normal(name.split("[")[0]), version))
    return found


def test_every_pin_carries_hashes():
    locks = [REPO / "requirements.lock", REPO / "requirements-tfserving.lock"]
    for lock in [*locks, *sorted(DOCKER.glob("*.lock"))]:
        entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().split("\n", 2)[2])
        unhashed = [e.split()[0] for e in entries if "==" in e and "--hash=sha256:" not in e]
        assert not unhashed, f"{lock.name}: no hash for {unhashed}"


@pytest.mark.parametrize(
    "lock, extra",
    [
        (REPO / "requirements.lock", "dev"),
        *((DOCKER / f"{i}.lock", e) for i, (e, _) in IMAGES.items()),
    ],
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_a_lock_holds_what_pyproject_declares(lock, extra):
    locked = pins(lock)
    stale = {
        name: (version, locked.get(name))
        for name, version in declared(extra).items()
        if locked.get(name) != version
    }
    assert not stale, f"{lock.name} is stale against pyproject.toml (run make lock): {stale}"


def test_image_locks_agree_with_the_venv_lock():
    everything = pins(REPO / "requirements.lock")
    for lock in sorted(DOCKER.glob("*.lock")):
        differing = {n: v for n, v in pins(lock).items() if everything.get(n) != v}
        assert not differing, f"{lock.name} pins {differing} unlike requirements.lock"


@pytest.mark.parametrize("image", [i for i in IMAGES if i != "protoc"])
def test_each_dockerfile_installs_its_own_lock_with_hashes(image):
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    assert f"deploy/docker/{image}.lock" in text
    assert f"--require-hashes -r {image}.lock" in text
    assert "requirements.lock" not in text


@pytest.mark.parametrize("image", ["gateway", "data", "registry", "inference-gpu"])
def test_images_without_tensorflow_lock_none(image):
    assert not {"tensorflow", "tensorflow-cpu"} & set(pins(DOCKER / f"{image}.lock"))


@pytest.mark.parametrize("image", [i for i in IMAGES if i != "protoc"])
def test_no_service_image_carries_the_code_generator(image):
    assert "grpcio-tools" not in pins(DOCKER / f"{image}.lock")


# The distributions that hold the modules importing argv[1] loads. A top-level name one
# distribution owns maps to it; a shared namespace (google.*, opentelemetry.*, grpc.*)
# maps file by file among the distributions sharing it. What the interpreter had loaded
# before (site start-up) does not count.
PROBE = """
import importlib, importlib.metadata as md, os, sys
before = set(sys.modules)
importlib.import_module(sys.argv[1])
owners = md.packages_distributions()
loaded = {n: m for n, m in list(sys.modules.items()) if n not in before}
found, shared = set(), {}
for name, module in loaded.items():
    candidates = owners.get(name.split(".")[0], [])
    path = getattr(module, "__file__", None)
    if len(candidates) == 1:
        found.add(candidates[0])
    elif candidates and path:
        shared[os.path.realpath(path)] = candidates
by_file = {}
for name in {c for cs in shared.values() for c in cs}:
    dist = md.distribution(name)
    for file in dist.files or []:
        by_file[os.path.realpath(dist.locate_file(file))] = name
found |= {by_file[path] for path in shared if path in by_file}
print(sorted(found))
"""


@pytest.mark.parametrize("image", [i for i, (_, module) in IMAGES.items() if module])
def test_what_a_server_imports_is_in_its_image_lock(image):
    module = IMAGES[image][1]
    run = subprocess.run(
        [sys.executable, "-c", PROBE, module], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {normal(d) for d in eval(run.stdout.strip().splitlines()[-1])}  # noqa: S307
    # The code itself (copied into the image), grpcio-tools, which grpc's own __init__
    # imports when it happens to be installed, pygments, which mako (Alembic's templates)
    # imports when it happens to be installed, pandas, which pyarrow imports on its
    # first array when it happens to be installed, and backports-strenum, whose
    # `backports` namespace urllib3 opens looking for `backports.zstd` (optional: the
    # images that lack them run without).
    imported -= {"tfmesh", "grpcio-tools", "pygments", "pandas", "backports-strenum"}
    missing = imported - set(pins(DOCKER / f"{image}.lock"))
    assert not missing, f"{image}.lock lacks what {module} imports: {sorted(missing)}"
