"""An MLServer runtime for the benchmark's peer rows: a TensorFlow SavedModel's serving
signature behind MLServer's own KServe v2 REST server and adaptive batcher.

MLServer imports this file inside its own venv (`make peer`), never in tfmesh's. With the
model parameter `extra.threaded` the model runs on a thread, so MLServer's event loop
decodes the next requests meanwhile; without it, on the event loop, as most custom
runtimes do. The bench tries both."""

import asyncio

import numpy as np
import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):
    async def load(self) -> bool:
        loaded = tf.saved_model.load(self.settings.parameters.uri)
        self._serve = loaded.signatures["serving_default"]
        self._input = next(iter(self._serve.structured_input_signature[1]))
        extra = self.settings.parameters.extra or {}
        self._threaded = bool(extra.get("threaded", False))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        inputs = {self._input: tf.constant(rows)}
        if self._threaded:
            outputs = await asyncio.to_thread(self._serve, **inputs)
        else:
            outputs = self._serve(**inputs)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, value.numpy()) for name, value in outputs.items()
            ],
        )
