"""What a REST handler takes and gives: the call (path parameters, headers, body) and the
reply (status, body, content type, headers), with the JSON renderings every protocol's
handlers share: a document, an error (`{"error": "<message>"}`, both APIs' shape), a
protobuf message as Triton's HTTP API writes it, and the headers of a prediction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.inference.pipeline import Prediction
from shared.serving_names import VERSION_HEADER

JSON = b"application/json"
BINARY = b"application/octet-stream"
REQUEST_ID_HEADER = b"x-request-id"


@dataclass(frozen=True)
class Call:
    params: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


Handler = Callable[[Call], Awaitable[Reply]]


def json_reply(document: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))


def error_reply(status: int, message: str) -> Reply:
    return json_reply({"error": message}, status)


def answer_headers(prediction: Prediction) -> tuple[tuple[bytes, bytes], ...]:
    """The version that answered, and the request id feedback names the prediction by."""
    return (
        (VERSION_HEADER.lower().encode(), str(prediction.version).encode()),
        (REQUEST_ID_HEADER, prediction.request_id.encode()),
    )


def request_id(call: Call, given: str = "") -> str:
    """The request id in the body, else the `x-request-id` header (Envoy sets one)."""
    return given or call.headers.get(REQUEST_ID_HEADER, b"").decode("latin-1")


_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _numbers(document: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """Write the 64-bit integer fields of a message's JSON as numbers, in place."""
    for field in descriptor.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            entry = message.fields_by_name["value"]
            if entry.message_type is not None:
                for item in value.values():
                    _numbers(item, entry.message_type)
            elif entry.type in _INT64_TYPES:
                document[field.name] = {key: int(item) for key, item in value.items()}
        elif message is not None:
            for item in value if field.is_repeated else [value]:
                _numbers(item, message)
        elif field.type in _INT64_TYPES:
            document[field.name] = [int(v) for v in value] if field.is_repeated else int(value)
    return document


def message_json(message: Message) -> dict[str, Any]:
    """A KServe v2 message as Triton's HTTP API writes it: protobuf's JSON mapping, with
    64-bit integers as numbers rather than strings."""
    document = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(document, cast(Descriptor, message.DESCRIPTOR))
