"""The gRPC methods the repository's protos define, as `/package.Service/Method` paths,
and whether an authorization policy's path names one (or, for HTTP paths, a REST route)."""

from __future__ import annotations

import re
from pathlib import Path

from k8s.check.rest_paths import rest_path_problem

_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)\s*;", re.MULTILINE)
_SERVICE = re.compile(r"\bservice\s+(\w+)\s*\{(.*?)\n\}", re.DOTALL)
_RPC = re.compile(r"\brpc\s+(\w+)\s*\(")


def grpc_methods(protos: Path) -> set[str]:
    methods = set()
    for path in protos.rglob("*.proto"):
        text = re.sub(r"//[^\n]*", "", path.read_text())
        package = _PACKAGE.search(text)
        prefix = f"{package.group(1)}." if package else ""
        for service, body in _SERVICE.findall(text):
            methods.update(f"/{prefix}{service}/{rpc}" for rpc in _RPC.findall(body))
    return methods


def path_problem(path: str, methods: set[str]) -> str | None:
    """Why an authorization path names no method (None when it does); `/pkg.Svc/*` allowed.
    A path whose first part is not a package-qualified service is an HTTP path, checked
    against the inference service's REST routes."""
    if "." not in path.split("/")[1]:
        return rest_path_problem(path)
    if path.endswith("/*"):
        service = path[:-1]
        if any(method.startswith(service) for method in methods):
            return None
        return f"no gRPC service {path[1:-2]} in protos/"
    return None if path in methods else f"no gRPC method {path} in protos/"
