"""The REST routes of the serving APIs, KServe v2 (with Triton's extensions) and TF
Serving, each declared once: method, path template, the handler that answers it, the
permission it needs, and its documented body and answer.

The inference service dispatches on this table (services.inference.rest.app calls the
method a route's `handler` names), the permission table takes each route's permission
(shared.permissions), and the gateway, which forwards these paths unparsed, writes them
into its OpenAPI document from here (gateway.serving_docs). A template names path
parameters `{name}`; `[...]` is an optional part and `|` separates the alternatives in
one, so `/v1/models/{model}[/versions/{version}|/labels/{label}]` is three paths. A
parameter is one path segment unless the route gives its pattern. The template is also
the route's name in metrics."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from google.protobuf.message import Message
from pydantic import BaseModel, Field, StrictBool

from inference import grpc_predict_v2_pb2 as v2
from shared.permissions import OPEN, PREDICT, READ

_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class RestRoute:
    method: str
    template: str
    # The method that answers it, on its API's REST handlers (services.inference.rest.app
    # APIS, by `tag`).
    handler: str
    permission: str
    summary: str
    body: type[BaseModel] | None = None
    # A pydantic model or a protobuf message (answered as its JSON); None only for a route
    # that answers no 200 (its `answers` say what it answers instead).
    answer: type[BaseModel] | type[Message] | None = None
    # Statuses other than 200 that the route answers on purpose, and what they mean.
    answers: Mapping[int, str] = field(default_factory=dict)
    # Patterns of the path parameters that are not any one segment.
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The API the route belongs to."""
        return "kserve" if self.template.startswith("/v2") else "tfserving"

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        """The regular expression the whole path must match."""
        parts = []
        for piece in re.split(r"(\{\w+\}|\[|\]|\|)", self.template):
            if piece == "[":
                parts.append("(?:")
            elif piece == "]":
                parts.append(")?")
            elif piece == "|":
                parts.append("|")
            elif match := _PARAMETER.fullmatch(piece):
                name = match.group(1)
                parts.append(f"(?P<{name}>{self.params.get(name, '[^/]+')})")
            else:
                parts.append(re.escape(piece))
        return re.compile("".join(parts))

    def paths(self) -> list[str]:
        """Every concrete path of the template (as OpenAPI writes paths)."""
        match = re.search(r"\[([^\]]*)\]", self.template)
        if match is None:
            return [self.template]
        head, tail = self.template[: match.start()], self.template[match.end() :]
        return [head + tail] + [head + part + tail for part in match.group(1).split("|")]


# --- documented bodies and answers -----------------------------------------------------------

Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Parameters = dict[str, StrictBool | Int64 | float | str]
Shape = list[Annotated[int, Field(ge=0, le=2**62)]]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferInput(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    shape: Shape = Field(max_length=32)
    datatype: str = Field(max_length=16)
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] = Field(description="Row-major values, nested or flat")


class RequestedOutput(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    parameters: Parameters = Field(default_factory=dict)


class InferBody(BaseModel):
    id: str = Field(default="", max_length=256)
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] = Field(default_factory=list)


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] = Field(description="Row-major values, flat")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    parameters: Parameters = Field(default_factory=dict)
    outputs: list[InferOutput]


class VersionStatus(BaseModel):
    version: str
    state: str = Field(description="START, LOADING, AVAILABLE, UNLOADING or END")
    status: dict[str, str] = Field(description="error_code and error_message")


class ModelStatus(BaseModel):
    model_version_status: list[VersionStatus]


class SignatureMetadata(BaseModel):
    model_spec: dict[str, str] = Field(description="name, signature_name and version")
    metadata: dict[str, Any] = Field(
        description="`signature_def`: the SignatureDefMap, as TF Serving writes it"
    )


class PredictBody(BaseModel):
    signature_name: str = Field(default="", max_length=256)
    instances: list[Any] | None = Field(default=None, description="Row format")
    inputs: Any = Field(default=None, description="Columnar format")


class Predictions(BaseModel):
    predictions: list[Any] | None = Field(default=None, description="Answer to `instances`")
    outputs: Any = Field(default=None, description="Answer to `inputs`")


# --- the routes ------------------------------------------------------------------------------

V2_MODEL = "/v2/models/{model}[/versions/{version}]"
TF_MODEL = "/v1/models/{model}[/versions/{version}|/labels/{label}]"
TF_PARAMS = {"model": "[^/:]+", "version": r"\d+", "label": "[^/:]+"}
NOT_READY = {400: "Not ready"}


# In matching order: a path takes the first route whose pattern it matches.
ROUTES: tuple[RestRoute, ...] = (
    RestRoute(
        "GET", "/v2", "server_metadata", READ, "KServe v2: server metadata", answer=ServerMetadata
    ),
    RestRoute("GET", "/v2/health/live", "live", OPEN, "KServe v2: the server is live", answer=Live),
    RestRoute(
        "GET",
        "/v2/health/ready",
        "ready",
        OPEN,
        "KServe v2: every model is ready",
        answer=Ready,
        answers=NOT_READY,
    ),
    RestRoute(
        "GET",
        "/v2/models/stats",
        "model_stats",
        READ,
        "Triton: statistics of every loaded version",
        answer=v2.ModelStatisticsResponse,
    ),
    RestRoute(
        "GET",
        V2_MODEL,
        "model_metadata",
        READ,
        "KServe v2: model metadata (a version is a number or a label)",
        answer=ModelMetadata,
    ),
    RestRoute(
        "GET",
        V2_MODEL + "/ready",
        "model_ready",
        READ,
        "KServe v2: the model (version) is ready",
        answer=ModelReady,
        answers=NOT_READY,
    ),
    RestRoute(
        "GET",
        V2_MODEL + "/config",
        "model_config",
        READ,
        "Triton: model configuration",
        answer=v2.ModelConfigResponse,
    ),
    RestRoute(
        "GET",
        V2_MODEL + "/stats",
        "model_stats",
        READ,
        "Triton: statistics of the model's versions",
        answer=v2.ModelStatisticsResponse,
    ),
    RestRoute(
        "POST",
        V2_MODEL + "/infer",
        "infer",
        PREDICT,
        "KServe v2: inference (JSON, or Triton's binary tensors)",
        body=InferBody,
        answer=InferResponse,
    ),
    RestRoute(
        "GET",
        TF_MODEL,
        "tf_status",
        READ,
        "TF Serving: status of versions",
        answer=ModelStatus,
        params=TF_PARAMS,
    ),
    RestRoute(
        "GET",
        TF_MODEL + "/metadata",
        "tf_metadata",
        READ,
        "TF Serving: the signature",
        answer=SignatureMetadata,
        params=TF_PARAMS,
    ),
    RestRoute(
        "POST",
        TF_MODEL + ":predict",
        "tf_predict",
        PREDICT,
        "TF Serving: predict (row or columnar format)",
        body=PredictBody,
        answer=Predictions,
        params=TF_PARAMS,
    ),
    RestRoute(
        "POST",
        TF_MODEL + ":{verb}",
        "tf_unimplemented",
        PREDICT,
        "TF Serving: classify and regress (not served)",
        answers={501: "Not served: only :predict is"},
        params={**TF_PARAMS, "verb": "classify|regress"},
    ),
)


def route_of(method: str, path: str) -> tuple[RestRoute | None, dict[str, str], set[str]]:
    """The route of a request, its path parameters, and the methods the path takes."""
    allowed = set()
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if route.method == method:
            return route, {k: v for k, v in match.groupdict().items() if v is not None}, set()
        allowed.add(route.method)
    return None, {}, allowed
