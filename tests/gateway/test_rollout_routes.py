"""The rollout REST routes through the gateway app, against a real registry server (no
inference service: the policy, the refusals and a rollout that has not started)."""

from __future__ import annotations

from tests.gateway.test_registry_routes import register

POLICY = {
    "steps": [5, 20, 50, 100],
    "step_seconds": 30,
    "step_min_requests": 100,
    "step_timeout_seconds": 600,
    "checks": [
        {"metric": "error_ratio", "max_degradation": 0.01, "min_samples": 100},
        {"metric": "live_accuracy", "max_degradation": 0.02, "min_samples": 200},
    ],
}


async def test_a_policy_is_set_read_and_deleted(client, registry_server, tmp_path):
    await register(registry_server.address, tmp_path, "digits", 0.9, "v1")
    stored = await client.put("/api/v1/models/digits/rollout-policy", json=POLICY)
    assert stored.status_code == 200, stored.text
    policy = stored.json()["policy"]
    assert policy["steps"] == [5, 20, 50, 100] and policy["confidence"] == 0.95
    assert [c["metric"] for c in policy["checks"]] == ["METRIC_ERROR_RATIO", "METRIC_LIVE_ACCURACY"]
    fetched = await client.get("/api/v1/models/digits/rollout-policy")
    assert fetched.json()["policy"]["step_timeout_seconds"] == 600
    assert (await client.delete("/api/v1/models/digits/rollout-policy")).status_code == 204
    assert (await client.get("/api/v1/models/digits/rollout-policy")).status_code == 404


async def test_bad_policies_and_changes_are_refused_with_the_reason(
    client, registry_server, tmp_path
):
    await register(registry_server.address, tmp_path, "digits", 0.9, "v1")
    unordered = await client.put(
        "/api/v1/models/digits/rollout-policy", json={**POLICY, "steps": [5, 50, 20, 100]}
    )
    assert unordered.status_code == 400
    fields = [
        v["field"]
        for detail in unordered.json()["error"]["details"]
        for v in detail.get("fieldViolations", [])
    ]
    assert fields == ["policy.steps"]
    too_much = {
        **POLICY,
        "checks": [{"metric": "error_ratio", "max_degradation": 3, "min_samples": 1}],
    }
    refused = await client.put("/api/v1/models/digits/rollout-policy", json=too_much)
    assert refused.status_code == 400 and "max_degradation" in refused.text
    unknown_metric = {
        **POLICY,
        "checks": [{"metric": "vibes", "max_degradation": 0, "min_samples": 1}],
    }
    assert (
        await client.put("/api/v1/models/digits/rollout-policy", json=unknown_metric)
    ).status_code == 400
    assert (await client.get("/api/v1/models/digits/rollout-policy")).status_code == 404
    paused = await client.post("/api/v1/models/digits/rollout/pause", json={"reason": "x"})
    assert paused.status_code == 400
    assert paused.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert (await client.post("/api/v1/models/digits/rollout/explode")).status_code in (
        400,
        404,
        422,
    )
    assert (await client.get("/api/v1/models/digits/rollout")).status_code == 404
