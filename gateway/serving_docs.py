"""The serving APIs' REST routes (KServe v2, TF Serving) in the gateway's OpenAPI document.

The gateway forwards these paths unparsed to the inference service (gateway.forward), so
it mounts no route for them; it documents them from the same table the inference service
dispatches on (shared.rest_routes): each route's concrete paths, its path parameters, its
body and answer, and the other statuses it answers on purpose."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.message import Message
from pydantic import BaseModel

from gateway.schemas import model_ref, proto_ref
from shared.rest_routes import ROUTES, RestRoute

_DESCRIPTIONS = {
    "model": "Model name",
    "version": "Version number (KServe v2: a number, or a label)",
    "label": "Version label",
    "verb": "classify or regress",
}


def _parameter_schema(route: RestRoute, name: str) -> dict[str, Any]:
    pattern = route.params.get(name)
    if pattern == r"\d+":
        return {"type": "integer", "minimum": 1, "maximum": 2**62}
    if pattern is not None and re.fullmatch(r"\w+(\|\w+)+", pattern):
        return {"type": "string", "enum": pattern.split("|")}
    return {"type": "string", "minLength": 1, "maxLength": 128}


def _answer_schema(answer: type[BaseModel] | type[Message] | None) -> dict[str, Any]:
    if answer is None:
        return {}
    if issubclass(answer, BaseModel):
        return model_ref(answer)
    return proto_ref(answer)


def _operation(route: RestRoute, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [route.tag],
        "summary": route.summary,
        "description": "Answered by the inference service; the gateway forwards it.",
        "operationId": re.sub(r"\W+", "_", f"{route.method} {path}").strip("_").lower(),
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": _DESCRIPTIONS.get(name, name),
                "schema": _parameter_schema(route, name),
            }
            for name in re.findall(r"\{(\w+)\}", path)
        ],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": _answer_schema(route.answer)}},
            },
            **{str(status): {"description": text} for status, text in route.answers.items()},
        },
    }
    if route.body is not None:
        content = {"application/json": {"schema": model_ref(route.body)}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def add_serving_routes(document: dict[str, Any]) -> dict[str, Any]:
    """Add every serving route's operations to `document`'s paths."""
    paths = document.setdefault("paths", {})
    for route in ROUTES:
        for path in route.paths():
            paths.setdefault(path, {})[route.method.lower()] = _operation(route, path)
    return document
