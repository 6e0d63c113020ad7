"""TF Serving's REST API: status (`GET /v1/models/{m}[/versions/{v}|/labels/{l}]`),
signature metadata (`.../metadata`) and `:predict` in the row and columnar formats, each
asked of the data plane (services.inference.protocols.tfserving.dataplane) and written as
TF Serving writes it (services.inference.protocols.tfserving.json_codec). `:classify` and
`:regress` answer 501: only `:predict` is served."""

from __future__ import annotations

from services.inference.pipeline import Pipeline
from services.inference.protocols.tfserving import json_codec
from services.inference.protocols.tfserving.dataplane import TFServingDataPlane
from services.inference.rest.replies import (
    Call,
    Reply,
    answer_headers,
    error_reply,
    json_reply,
    request_id,
)
from shared.errors import invalid


def _pin(call: Call) -> tuple[int, str]:
    version = call.params.get("version")
    if version is not None and int(version) < 1:
        raise invalid("version", "versions start at 1")
    return int(version or 0), call.params.get("label") or ""


class TFServingRest:
    def __init__(self, pipeline: Pipeline) -> None:
        self._plane = TFServingDataPlane(pipeline)

    async def tf_status(self, call: Call) -> Reply:
        views = self._plane.statuses(call.params["model"], *_pin(call), "version")
        return json_reply(json_codec.model_status(views))

    async def tf_metadata(self, call: Call) -> Reply:
        name = call.params["model"]
        return json_reply(json_codec.metadata(name, self._plane.signature_of(name, *_pin(call))))

    async def tf_predict(self, call: Call) -> Reply:
        name = call.params["model"]
        version, label = _pin(call)
        target = self._plane.signature_of(name, version, label)
        inputs, rows = json_codec.predict_inputs(call.body, target)
        prediction = await self._plane.predict(
            name, inputs, version, label, request_id=request_id(call)
        )
        return Reply(
            200, json_codec.predict_answer(prediction, rows), headers=answer_headers(prediction)
        )

    async def tf_unimplemented(self, call: Call) -> Reply:
        return error_reply(501, f"{call.params['verb']} is not served: only :predict is")
