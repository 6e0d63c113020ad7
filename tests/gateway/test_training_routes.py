"""The training service's REST routes through the gateway app: a tiny job on a real data
server's sample, followed over the NDJSON event stream to its registration, and refusals
of bad specs as JSON field violations."""

from __future__ import annotations

import asyncio
import json

TINY_JOB = {
    "model": {"mlp": {"hidden_units": [8]}},
    "hyperparameters": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01},
    "model_name": "iris",
    "seed": 7,
}


async def iris_version(client) -> str:
    imported = await client.post("/api/v1/datasets/samples", json={"sample": "iris"})
    return imported.json()["version"]["name"]


async def events_of(client, job: str, since_sequence: int = 0) -> list[dict]:
    params = {"since_sequence": since_sequence}
    async with client.stream("GET", f"/api/v1/jobs/{job}/events", params=params) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) async for line in stream.aiter_lines() if line]


async def test_submit_watch_and_registration(platform):
    spec = dict(TINY_JOB, dataset_version=await iris_version(platform))
    submitted = await platform.post("/api/v1/jobs", json={"spec": spec, "job_id": "iris-1"})
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()["job"]
    assert job["name"] == "iris-1" and job["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING")
    events = await asyncio.wait_for(events_of(platform, "iris-1"), 120)
    states = [e["state_change"]["state"] for e in events if "state_change" in e]
    assert states[0] == "JOB_STATE_QUEUED" and states[-1] == "JOB_STATE_SUCCEEDED"
    epochs = [e["epoch"] for e in events if "epoch" in e]
    assert [(e["epoch"], e["epochs"]) for e in epochs] == [(1, 2), (2, 2)]
    assert "loss" in epochs[-1]["metrics"]
    sequences = [int(e["sequence"]) for e in events]
    assert sequences == sorted(sequences)
    replay = await events_of(platform, "iris-1", since_sequence=sequences[-2])
    assert [int(e["sequence"]) for e in replay] == sequences[-1:]
    done = (await platform.get("/api/v1/jobs/iris-1")).json()["job"]
    assert done["state"] == "JOB_STATE_SUCCEEDED"
    assert done["registration"]["model"] == "iris" and done["registration"]["version"] == "1"
    assert 0 <= done["metrics"]["accuracy"] <= 1
    versions = (await platform.get("/api/v1/models/iris/versions")).json()["versions"]
    assert versions[0]["lineage"]["dataset_version"] == spec["dataset_version"]
    succeeded = (await platform.get("/api/v1/jobs", params={"state": "succeeded"})).json()
    assert [j["name"] for j in succeeded["jobs"]] == ["iris-1"]
    assert (await platform.get("/api/v1/jobs", params={"state": "failed"})).json()["jobs"] == []
    repeated = await platform.post("/api/v1/jobs", json={"spec": spec, "job_id": "iris-1"})
    assert repeated.status_code == 201 and repeated.json()["job"]["state"] == "JOB_STATE_SUCCEEDED"


async def test_cancel_a_queued_or_running_job(platform):
    spec = dict(
        TINY_JOB,
        dataset_version=await iris_version(platform),
        hyperparameters={"epochs": 500, "batch_size": 4},
    )
    job = (await platform.post("/api/v1/jobs", json={"spec": spec})).json()["job"]["name"]
    cancelled = await platform.post(f"/api/v1/jobs/{job}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    events = await asyncio.wait_for(events_of(platform, job), 60)
    assert events[-1]["state_change"]["state"] == "JOB_STATE_CANCELLED"


async def test_bad_specs_are_400_with_field_violations(platform):
    version = await iris_version(platform)
    zero_epochs = dict(TINY_JOB, dataset_version=version, hyperparameters={"epochs": 0})
    refused = await platform.post("/api/v1/jobs", json={"spec": zero_epochs})
    assert refused.status_code == 400
    violations = refused.json()["error"]["details"][0]["fieldViolations"]
    assert any("epochs" in v["field"] for v in violations)
    unknown_field = await platform.post("/api/v1/jobs", json={"spec": {"epochz": 3}})
    assert unknown_field.status_code == 400 and "epochz" in unknown_field.json()["error"]["message"]
    wrong_type = await platform.post("/api/v1/jobs", json={"spec": {"seed": "soon"}})
    assert wrong_type.status_code == 400
    no_such_dataset = dict(TINY_JOB, dataset_version="iris@000000000000")
    missing = await platform.post("/api/v1/jobs", json={"spec": no_such_dataset})
    assert missing.status_code in (400, 404) and missing.json()["error"]["message"]
    assert (await platform.get("/api/v1/jobs/nope")).status_code == 404
    events = await platform.get("/api/v1/jobs/nope/events")
    assert events.status_code == 404 and events.json()["error"]["status"] == "NOT_FOUND"
    assert (await platform.post("/api/v1/jobs/nope/cancel")).status_code == 404
    assert (await platform.get("/api/v1/jobs", params={"state": "asleep"})).status_code == 400
