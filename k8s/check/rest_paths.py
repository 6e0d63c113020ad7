"""HTTP paths in authorization policies, checked against the inference service's REST
route table (KServe v2 and TF Serving; `shared.rest_routes.ROUTES`): a path
names a route template, or ends in `*` and is the start of one."""

from __future__ import annotations

from shared.rest_routes import ROUTES

TEMPLATES = tuple(route.template for route in ROUTES)


def rest_path_problem(path: str) -> str | None:
    """Why `path` names no REST route (None when it does)."""
    if path.endswith("*"):
        if any(template.startswith(path[:-1]) for template in TEMPLATES):
            return None
    elif path in TEMPLATES:
        return None
    return f"no REST route of the inference service matches {path}"
