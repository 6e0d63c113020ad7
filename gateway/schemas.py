"""OpenAPI schemas of protobuf messages, so the document describes what the routes send.

The platform routes answer with the proto3 JSON mapping of the services' messages (field
names as in the .proto, int64 as strings, enums by name) and several take a request
message as their body, as grpc-gateway does. Routes name a message with `proto_ref`;
`add_proto_schemas` then writes a schema for it, and for every message it contains, under
`components.schemas`, read from the message descriptors in protobuf's default pool."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel

REF_PREFIX = "#/components/schemas/"
# Pydantic models the document names (`model_ref`): bodies and answers of routes the
# gateway documents but does not parse.
_MODELS: dict[str, type[BaseModel]] = {}

_NUMBER = {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
_INT64 = {"anyOf": [{"type": "string", "pattern": "^-?[0-9]+$"}, {"type": "integer"}]}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: _NUMBER,
    FieldDescriptor.TYPE_FLOAT: _NUMBER,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_UINT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_FIXED64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Well-known types have their own JSON forms.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Any": {"type": "object"},
}


def proto_ref(message: type[Message]) -> dict[str, str]:
    return {"$ref": REF_PREFIX + message.DESCRIPTOR.full_name}


def proto_content(message: type[Message]) -> dict[str, Any]:
    return {"application/json": {"schema": proto_ref(message)}}


def proto_response(message: type[Message], description: str = "OK") -> dict[str, Any]:
    """An entry of a route's `responses`: this message's JSON."""
    return {"description": description, "content": proto_content(message)}


def proto_body(message: type[Message]) -> dict[str, Any]:
    """A route's `openapi_extra` for a body that is this message's JSON."""
    return {"requestBody": {"required": True, "content": proto_content(message)}}


def _value_schema(field: FieldDescriptor, pending: list[Descriptor]) -> dict[str, Any]:
    if field.enum_type is not None:
        return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        pending.append(field.message_type)
        return {"$ref": REF_PREFIX + name}
    return dict(_SCALARS[field.type])


def _field_schema(field: FieldDescriptor, pending: list[Descriptor]) -> dict[str, Any]:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value = _value_schema(entry.fields_by_name["value"], pending)
        return {"type": "object", "additionalProperties": value}
    if field.is_repeated:
        return {"type": "array", "items": _value_schema(field, pending)}
    return _value_schema(field, pending)


def message_schema(descriptor: Descriptor, pending: list[Descriptor]) -> dict[str, Any]:
    """The JSON schema of one message; messages it refers to are appended to `pending`."""
    return {
        "type": "object",
        "title": descriptor.name,
        "properties": {field.name: _field_schema(field, pending) for field in descriptor.fields},
        "additionalProperties": False,
    }


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    return set()


def add_proto_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Add the schema of every message the document refers to (and of those they name)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    pool = descriptor_pool.Default()
    pending: list[Descriptor] = []
    for ref in sorted(_refs(document.get("paths", {}))):
        name = ref.removeprefix(REF_PREFIX)
        if name not in schemas and "." in name:
            pending.append(pool.FindMessageTypeByName(name))
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name not in schemas:
            schemas[descriptor.full_name] = message_schema(descriptor, pending)
    return document


def model_ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to `model`'s schema; `add_model_schemas` then writes the schema."""
    _MODELS[model.__name__] = model
    return {"$ref": REF_PREFIX + model.__name__}


def add_model_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Write the schemas of the models named with `model_ref` under components."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, model in _MODELS.items():
        schema = model.model_json_schema(ref_template=REF_PREFIX + "{model}")
        for definition_name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(definition_name, definition)
        schemas.setdefault(name, schema)
    return document
