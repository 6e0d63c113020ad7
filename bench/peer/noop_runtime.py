"""An MLServer runtime with no model: it returns its first input as `output_0`, untouched
(no decoding to numpy), the cheapest runtime MLServer can run. The overhead bench serves
it beside tfmesh's `noop` runtime to measure what each server's front end costs per
request. MLServer imports this file inside its own venv (`make peer`)."""

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class NoOpRuntime(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        first = payload.inputs[0]
        output = ResponseOutput(
            name="output_0", shape=first.shape, datatype=first.datatype, data=first.data
        )
        return InferenceResponse(model_name=self.name, outputs=[output])
