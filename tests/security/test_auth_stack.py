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
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from cli.stack import LocalStack
from shared.auth import token_sha256
from tests.support.processes import REPO
from tests.support.stack import RunningStack, stack_environment

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


def request(
    url: str, token: str | None, method: str = "GET", body: object = None
) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(call, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_rest_routes_answer_401_and_403_for_the_callers_own_principal(stack: RunningStack) -> None:
    gateway = f"http://{stack.address('gateway')}"
    assert request(f"{gateway}/api/v1/models", None)[0] == 401
    assert request(f"{gateway}/api/v1/models", VIEWER_TOKEN)[0] == 200
    status, body = request(
        f"{gateway}/api/v1/models/digits/aliases/production",
        VIEWER_TOKEN,
        "PUT",
        {"version": 1, "reason": "not allowed"},
    )
    assert status == 403, body
    assert "vera" in json.dumps(body)
    # Forwarded to the inference REST port, which checks the same caller.
    assert request(f"{gateway}/v2/models/digits", None)[0] == 401
    assert request(f"{gateway}/v2/health/live", None)[0] == 200
