"""Fixtures for the deployment tests: the repository's manifests, rendered once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k8s.check.model import Resource
from k8s.check.render import find_kubectl, render

REPO = Path(__file__).resolve().parents[2]


def load_yaml(relative: str, name: str | None = None) -> dict:
    """The resource named `name` in a file (by default its first)."""
    documents = [d for d in yaml.safe_load_all((REPO / relative).read_text()) if d]
    return next(d for d in documents if name is None or d["metadata"]["name"] == name)


@pytest.fixture(scope="session")
def kubectl() -> str:
    return find_kubectl(REPO)


@pytest.fixture(scope="session")
def base_resources(kubectl) -> list[Resource]:
    return render(kubectl, REPO / "k8s" / "base", "k8s/base")


def pod_labels(resources: list[Resource], deployment: str) -> dict[str, str]:
    found = next(r for r in resources if r.kind == "Deployment" and r.name == deployment)
    return found.pod_labels()
