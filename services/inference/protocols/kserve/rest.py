"""KServe v2's REST API (with Triton's config, statistics and binary tensor extension):
each handler takes a call's path parameters and body to the data plane
(services.inference.protocols.kserve.dataplane) and writes its message as JSON. Readiness
answers 400 for false, as the protocol says; an infer body is JSON, or Triton's binary
form (JSON, then raw tensors, with `Inference-Header-Content-Length`)."""

from __future__ import annotations

from services.inference.pipeline import Pipeline
from services.inference.protocols.kserve import json_codec
from services.inference.protocols.kserve.dataplane import KServeDataPlane
from services.inference.rest.replies import (
    BINARY,
    Call,
    Reply,
    answer_headers,
    json_reply,
    message_json,
    request_id,
)
from shared.errors import invalid


class KServeRest:
    def __init__(self, pipeline: Pipeline) -> None:
        self._plane = KServeDataPlane(pipeline)

    async def server_metadata(self, call: Call) -> Reply:
        return json_reply(message_json(self._plane.server_metadata()))

    async def live(self, call: Call) -> Reply:
        return json_reply({"live": self._plane.server_live().live})

    async def ready(self, call: Call) -> Reply:
        ready = self._plane.server_ready().ready
        return json_reply({"ready": ready}, 200 if ready else 400)

    async def model_ready(self, call: Call) -> Reply:
        name = call.params["model"]
        ready = self._plane.model_ready(name, call.params.get("version", "")).ready
        return json_reply({"name": name, "ready": ready}, 200 if ready else 400)

    async def model_metadata(self, call: Call) -> Reply:
        answer = self._plane.model_metadata(call.params["model"], call.params.get("version", ""))
        return json_reply(message_json(answer))

    async def model_config(self, call: Call) -> Reply:
        answer = self._plane.model_config(call.params["model"], call.params.get("version", ""))
        return json_reply(message_json(answer.config))

    async def model_stats(self, call: Call) -> Reply:
        answer = await self._plane.model_statistics(
            call.params.get("model", ""), call.params.get("version", "")
        )
        return json_reply(message_json(answer))

    async def infer(self, call: Call) -> Reply:
        header, binary = _split_binary(call)
        request = json_codec.parse_infer(header, binary)
        prediction = await self._plane.infer(
            call.params["model"],
            call.params.get("version", ""),
            request.inputs,
            request.indexes,
            request.outputs,
            request_id(call, request.id),
        )
        body, header_length = json_codec.infer_response(prediction, request)
        if header_length == len(body):
            return Reply(200, body, headers=answer_headers(prediction))
        length = (json_codec.HEADER_LENGTH.encode(), str(header_length).encode())
        return Reply(200, body, BINARY, (length, *answer_headers(prediction)))


def _split_binary(call: Call) -> tuple[bytes, memoryview | None]:
    """The JSON part of an infer body, and the binary part when the header says there is
    one."""
    declared = call.headers.get(json_codec.HEADER_LENGTH.encode())
    if declared is None:
        return call.body, None
    if not declared.isdigit() or int(declared) > len(call.body):
        raise invalid(
            "Inference-Header-Content-Length",
            f"must be a byte count within the body ({len(call.body)} bytes), got "
            f"{declared.decode(errors='replace')!r}",
        )
    length = int(declared)
    return call.body[:length], memoryview(call.body)[length:]
