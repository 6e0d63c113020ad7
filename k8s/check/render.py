"""Rendering kustomizations with the kustomize built into kubectl, and loading YAML files.

kubectl is the one on PATH when its kustomize is v5 or newer (components need v3.7+),
otherwise `.venv/bin/kubectl`, which `python -m k8s.check.install_kubectl` provides."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from k8s.check.model import Resource

MIN_KUSTOMIZE_MAJOR = 5
KUSTOMIZATION = "kustomization.yaml"


class RenderError(Exception):
    """kustomize is missing or too old, or a kustomization does not build."""


def kustomize_major(kubectl: str) -> int | None:
    try:
        reply = subprocess.run(
            [kubectl, "version", "--client"], capture_output=True, text=True, timeout=60
        )
    except OSError:
        return None
    found = re.search(r"Kustomize Version: v(\d+)", reply.stdout)
    return int(found.group(1)) if found else None


def find_kubectl(repo: Path) -> str:
    """A kubectl whose built-in kustomize is new enough; RenderError naming the fix if none."""
    candidates = [shutil.which("kubectl"), str(repo / ".venv" / "bin" / "kubectl")]
    seen = []
    for candidate in candidates:
        if candidate is None or not Path(candidate).exists():
            continue
        major = kustomize_major(candidate)
        if major is not None and major >= MIN_KUSTOMIZE_MAJOR:
            return candidate
        seen.append(f"{candidate} (kustomize v{major})")
    raise RenderError(
        f"no kubectl with kustomize v{MIN_KUSTOMIZE_MAJOR}+ found"
        + (f"; too old: {', '.join(seen)}" if seen else "")
        + "; run `make setup` (or `.venv/bin/python -m k8s.check.install_kubectl`)"
    )


def kustomization_kind(directory: Path) -> str:
    document = yaml.safe_load((directory / KUSTOMIZATION).read_text()) or {}
    return str(document.get("kind", "Kustomization"))


def buildable_kustomizations(root: Path) -> list[Path]:
    """Every directory under `root` with a Kustomization (Components build through these)."""
    return sorted(
        path.parent
        for path in root.rglob(KUSTOMIZATION)
        if "node_modules" not in path.parts and kustomization_kind(path.parent) != "Component"
    )


def render(kubectl: str, directory: Path, label: str) -> list[Resource]:
    reply = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if reply.returncode != 0:
        raise RenderError(f"{label}: kustomize build failed: {reply.stderr.strip()}")
    return [Resource(doc, label) for doc in yaml.safe_load_all(reply.stdout) if doc]


def load_file(path: Path, label: str) -> list[Resource]:
    return [Resource(doc, label) for doc in yaml.safe_load_all(path.read_text()) if doc]
