"""The local stack with principals (`tfmesh up --auth`), as processes on free ports.

The stack makes its tokens file (an admin, the calling services) and the test adds a
viewer to it before the start, as an operator would. The CLI finds the admin token by
itself; a wrong token is refused with UNAUTHENTICATED; the gateway passes each caller's
credentials on, so its REST routes answer 401 without a token, 403 for a viewer moving an
alias, and 200 for reads, the same through the data-plane forwarding (KServe v2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cli.stack import LocalStack
from shared.auth import token_sha256
from tests.support.processes import REPO
from tests.support.stack import RunningStack, http_json, stack_environment

VIEWER_TOKEN = "viewer-token-for-the-test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("auth-stack")
    environment = stack_environment(home)
    patch = pytest.MonkeyPatch()
    for name, value in environment.items():
        patch.setenv(name, value)
    local = LocalStack(home)
    tokens = local.ensure_tokens()
    document = json.loads(tokens.read_text())
    document["principals"].append(
        {"name": "vera", "roles": ["viewer"], "token_sha256": token_sha256(VIEWER_TOKEN)}
    )
    tokens.write_text(json.dumps(document))
    try:
        yield RunningStack(home, local.up(auth=True), environment)
    finally:
        local.down()
        patch.undo()


def cli(stack: RunningStack, *arguments: str, **extra: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **stack.environment, **extra}
    for name in ("registry", "data", "training", "inference"):
        environment[f"TFMESH_{name.upper()}_ADDR"] = stack.address(name)
    return subprocess.run(
        [sys.executable, "-m", "cli", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_the_cli_uses_the_admin_token_and_a_wrong_token_is_refused(stack: RunningStack) -> None:
    assert "admin" in (stack.home / "auth" / "tokens.json").read_text()
    imported = cli(stack, "data", "import-sample", "iris", "--json")
    assert imported.returncode == 0, imported.stderr
    refused = cli(stack, "models", "list", TFMESH_TOKEN="not-a-token")
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr + refused.stdout


def test_rest_routes_answer_401_and_403_for_the_callers_own_principal(stack: RunningStack) -> None:
    gateway = f"http://{stack.address('gateway')}"
    assert http_json(f"{gateway}/api/v1/models")[0] == 401
    assert http_json(f"{gateway}/api/v1/models", token=VIEWER_TOKEN)[0] == 200
    status, body = http_json(
        f"{gateway}/api/v1/models/digits/aliases/production",
        {"version": 1, "reason": "not allowed"},
        method="PUT",
        token=VIEWER_TOKEN,
    )
    assert status == 403, body
    assert "vera" in json.dumps(body)
    # Forwarded to the inference REST port, which checks the same caller.
    assert http_json(f"{gateway}/v2/models/digits")[0] == 401
    assert http_json(f"{gateway}/v2/health/live")[0] == 200
