"""`tfmesh models ...` against a real registry process, as a person at a shell would use it."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from shared.channels import open_channel
from tests.support.processes import service_process


@pytest.fixture
def registry_address(tmp_path, monkeypatch):
    process = service_process("services.registry.server", "TFMESH_REGISTRY_", tmp_path).start()
    monkeypatch.setenv("TFMESH_REGISTRY_ADDR", process.address)
    yield process.address
    process.stop_quietly()


def register(address: str, tmp_path, accuracies: list[float]) -> None:
    async def go() -> None:
        async with open_channel(address) as channel:
            client = RegistryClient(channel)
            for i, accuracy in enumerate(accuracies, start=1):
                artifact = tmp_path / f"v{i}.bin"
                artifact.write_bytes(b"%d" % i)
                await client.upload_version(
                    NewVersion(
                        "digits",
                        [ArtifactFile("model.bin", artifact)],
                        {"accuracy": accuracy},
                        idempotency_key=f"v{i}",
                    )
                )

    asyncio.run(go())


def test_list_show_promote_canary_and_history(registry_address, tmp_path):
    register(registry_address, tmp_path, [0.90, 0.95, 0.89])
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [m["name"] for m in json.loads(listed.output)] == ["digits"]
    assert "digits" in runner.invoke(app, ["models", "list"]).output
    promoted = runner.invoke(app, ["models", "promote", "digits", "1", "--actor", "ci"])
    assert promoted.exit_code == 0 and "production -> v1" in promoted.output
    canary = runner.invoke(app, ["models", "canary", "digits", "2", "--weight", "20"])
    assert canary.exit_code == 0 and "at 20%" in canary.output
    refused = runner.invoke(app, ["models", "promote", "digits", "3"])
    assert refused.exit_code == 1 and "FAILED_PRECONDITION" in refused.output
    forced = runner.invoke(
        app, ["models", "promote", "digits", "3", "--override", "--reason", "hotfix"]
    )
    assert forced.exit_code == 0 and "gate overridden" in forced.output
    shown = json.loads(runner.invoke(app, ["models", "show", "digits", "--json"]).output)
    assert {v["version"]: v["aliases"] for v in shown} == {
        "1": [],
        "2": ["canary"],
        "3": ["production"],
    }
    history = json.loads(runner.invoke(app, ["models", "history", "digits", "--json"]).output)
    assert [(h["alias"], h["new_version"], h["actor"]) for h in history][0] == (
        "production",
        "1",
        "ci",
    )
    assert history[-1]["overridden"] and history[-1]["reason"] == "hotfix"


def test_bad_weight_is_refused_before_any_call(registry_address):
    result = CliRunner().invoke(app, ["models", "canary", "digits", "1", "--weight", "101"])
    assert result.exit_code == 2 and "less than or equal to 100" in result.output
