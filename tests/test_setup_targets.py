"""The Makefile's set-up is split by need, and refuses an unsupported Python in one line.

`make demo` must install only the venv, the generated code and Prometheus: its whole
recipe, as make would run it from scratch (`make -n -B`, into a scratch venv path), names
pip, protoc and Debian's prometheus package, and no other system package, npm or binary
download. Running it for real would rebuild the
venv (minutes of pip); the dry run shows every command that would run. `make test`'s
recipe does add the system packages."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.support.processes import REPO

INSTALLERS = ("apt-get", "sudo", "npm", "curl", "wget", "install_kubectl", "dnf", "brew")


# A make that runs this test (make test) passes its own flags and level down in the
# environment; the makes started here start clean.
PARENT_MAKE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def clean_environment(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in PARENT_MAKE}, **extra}


def make(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environment(),
    )


def test_the_demo_installs_the_venv_generated_code_and_prometheus_and_nothing_else(tmp_path):
    run = make("-n", "-B", "demo", f"VENV={tmp_path / 'venv'}")
    assert run.returncode == 0, run.stderr
    assert "pip install -q --require-hashes -r requirements.lock" in run.stdout
    assert "grpc_tools.protoc" in run.stdout
    assert "cli.demo" in run.stdout
    # The one system package: the demo reads its figures back from a real Prometheus.
    assert "apt-get install -y -q prometheus" in run.stdout
    others = "\n".join(line for line in run.stdout.splitlines() if "prometheus" not in line)
    used = [word for word in INSTALLERS if word in others]
    assert not used, f"make demo would run {used}:\n{run.stdout}"


def test_the_tests_set_up_add_the_system_packages(tmp_path):
    run = make("-n", "-B", "test", f"VENV={tmp_path / 'venv'}")
    assert run.returncode == 0, run.stderr
    for needed in (
        "apt-get install -y -q postgresql",
        "apt-get install -y -q chromium",
        "npm ci",
        "install_kubectl",
        "pytest",
    ):
        assert needed in run.stdout, f"make test does not run {needed!r}"


def test_an_unsupported_python_stops_the_set_up_at_once_in_one_line(tmp_path):
    stand_in = tmp_path / "python3"
    stand_in.write_text("#!/bin/sh\necho 'Python 3.9.18'\n")
    stand_in.chmod(0o755)
    venv = tmp_path / "venv"
    run = make("demo", f"PYTHON={stand_in}", f"VENV={venv}")
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(lines) == 1, run.stderr
    assert "tfmesh needs Python 3.11" in lines[0] and "is 3.9" in lines[0]
    assert not venv.exists()


def test_a_missing_system_package_without_apt_names_what_to_install(tmp_path):
    # A PATH with the shell tools the recipe uses but no apt-get: the check for a command
    # that is surely absent fails, and the recipe says what to install in one line.
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "id"):
        (tools / tool).symlink_to(shutil.which(tool))
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        f"include {REPO / 'Makefile'}\n"
        "absent:\n"
        "\t$(call deb,tfmesh-surely-absent,command -v tfmesh-surely-absent >/dev/null,a test)\n"
    )
    env = clean_environment(PATH=str(tools))
    run = subprocess.run(
        [shutil.which("make"), "-f", str(makefile), "--no-print-directory", "absent"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode != 0
    assert "tfmesh needs the Debian package tfmesh-surely-absent (a test): install it" in run.stderr
