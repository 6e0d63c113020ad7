"""JSON in and out of the gateway: protobuf messages to JSON-ready dicts (proto3 JSON
mapping, snake_case names) and back, and a response class that encodes with orjson
(numpy arrays too)."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse

from shared.errors import invalid

M = TypeVar("M", bound=Message)


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def message_response(message: Message, status_code: int = 200) -> OrjsonResponse:
    return OrjsonResponse(to_json(message), status_code)


async def parse_body(request: Request, message: M) -> M:
    """Fill `message` from the request's JSON body (proto3 JSON mapping); a body that is
    not JSON, or not that message's JSON, is an InvalidArgument on `body`."""
    try:
        document = orjson.loads(await request.body())
    except orjson.JSONDecodeError as error:
        raise invalid("body", f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise invalid("body", "must be a JSON object")
    try:
        json_format.ParseDict(document, message)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise invalid("body", str(error)) from None
    return message
