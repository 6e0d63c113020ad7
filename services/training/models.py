"""Keras models for a job: the built-in templates, checked Keras JSON, normalization baked in.

Every model this service trains is `x -> Normalization(train mean/variance) -> body`, with
the input named `x`, so the exported artifacts need no preprocessing at serving time. The
body is a template (`mlp`, `cnn`) or a user's `model.to_json()`. User JSON is walked before
Keras sees it: only classes that Keras itself ships are allowed, and Lambda layers (which
carry Python bytecode) are refused, so deserializing never runs user code. Keras is
imported inside the functions, so importing this module stays cheap."""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from services.training.datasource import DatasetInfo
from services.training.spec import (
    CnnTemplate,
    KerasJsonModel,
    MlpTemplate,
    ModelSource,
    TrialParams,
)
from shared.errors import FieldViolation, InvalidArgument, invalid

if TYPE_CHECKING:
    import keras

INPUT_NAME = "x"
KERAS_JSON_FIELD = "spec.model.keras_json"
# Classes Keras ships that run arbitrary code or load files: never accepted from users.
REFUSED_CLASSES = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
# Markers Keras writes for plain values (tensors wiring layers together, tuples, arrays).
VALUE_MARKERS = frozenset({"__keras_tensor__", "__tuple__", "__numpy__", "__tensor__"})
MAX_KERAS_JSON_BYTES = 1024 * 1024
# Variances below this are constant features; dividing by their tiny std would blow up
# any serving-time value that differs from the train mean, so they scale by 1 instead.
MIN_VARIANCE = 1e-12


def _walk(node: Any, path: str, problems: list[FieldViolation]) -> None:
    if isinstance(node, list):
        for index, item in enumerate(node):
            _walk(item, f"{path}[{index}]", problems)
        return
    if not isinstance(node, dict):
        return
    if "class_name" in node:
        problem = _class_problem(node)
        if problem:
            problems.append(FieldViolation(KERAS_JSON_FIELD, f"{path}: {problem}"))
            return
    for key, value in node.items():
        _walk(value, f"{path}.{key}", problems)


def _class_problem(node: dict[str, Any]) -> str | None:
    class_name = node["class_name"]
    module = node.get("module")
    if class_name in VALUE_MARKERS:
        return None
    if class_name in REFUSED_CLASSES:
        return f"{class_name} layers are not accepted (they carry code)"
    if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
        return f"class {class_name!r} from module {module!r} is not a Keras class"
    registered = node.get("registered_name")
    if registered is not None and registered != class_name:
        return f"custom object {registered!r} is not accepted"
    try:
        resolved = getattr(importlib.import_module(module), class_name)
    except (ImportError, AttributeError):
        return f"Keras has no class {module}.{class_name}"
    if not isinstance(resolved, type):
        return f"{module}.{class_name} is not a class"
    return None


def keras_json_violations(text: str) -> list[FieldViolation]:
    """Problems that make a user's Keras JSON unsafe or unreadable; empty when it is fine."""
    if len(text.encode()) > MAX_KERAS_JSON_BYTES:
        return [FieldViolation(KERAS_JSON_FIELD, f"longer than {MAX_KERAS_JSON_BYTES} bytes")]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return [FieldViolation(KERAS_JSON_FIELD, f"not JSON: {error}")]
    if not isinstance(document, dict) or "class_name" not in document:
        return [FieldViolation(KERAS_JSON_FIELD, "not a Keras model config (no class_name)")]
    problems: list[FieldViolation] = []
    _walk(document, "$", problems)
    return problems


def _keras_json_body(text: str, info: DatasetInfo) -> keras.Model:
    import keras

    if problems := keras_json_violations(text):
        raise InvalidArgument(problems)
    try:
        body = keras.models.model_from_json(text)
    except Exception as error:  # noqa: BLE001 - any deserialization failure is the user's input
        raise invalid(KERAS_JSON_FIELD, f"Keras cannot build this model: {error}") from None
    # An unbuilt Sequential has no inputs at all (reading them raises).
    if not isinstance(body, keras.Model) or not body.built or not body.inputs:
        raise invalid(KERAS_JSON_FIELD, "the model must declare its input shape (keras.Input)")
    if len(body.inputs) != 1 or len(body.outputs) != 1:
        raise invalid(KERAS_JSON_FIELD, "the model must have exactly one input and one output")
    declared = tuple(body.inputs[0].shape[1:])
    if declared != info.feature_shape:
        raise invalid(
            KERAS_JSON_FIELD,
            f"input shape {list(declared)} does not fit the dataset's feature shape "
            f"{list(info.feature_shape)}",
        )
    output = tuple(body.outputs[0].shape[1:])
    if output != (info.num_classes,):
        raise invalid(
            KERAS_JSON_FIELD,
            f"output shape {list(output)} does not fit the dataset's {info.num_classes} classes",
        )
    return body


def _mlp_body(template: MlpTemplate, params: TrialParams, info: DatasetInfo) -> keras.Model:
    import keras

    units = params.hidden_units or template.hidden_units
    dropout = template.dropout if params.dropout is None else params.dropout
    layers: list[keras.Layer] = [keras.Input(info.feature_shape), keras.layers.Flatten()]
    for width in units:
        layers.append(keras.layers.Dense(width, activation="relu"))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(info.num_classes, activation="softmax"))
    return keras.Sequential(layers, name="mlp")


def _cnn_problem(template: CnnTemplate, info: DatasetInfo) -> str | None:
    shape = info.feature_shape
    if len(shape) not in (2, 3):
        return f"cnn needs H x W or H x W x C features, the dataset has shape {list(shape)}"
    smallest = min(shape[0], shape[1]) // 2 ** len(template.filters)
    if smallest < 1:
        return (
            f"{len(template.filters)} pooling blocks shrink {shape[0]}x{shape[1]} "
            "features to nothing; use fewer filters"
        )
    return None


def _cnn_body(template: CnnTemplate, params: TrialParams, info: DatasetInfo) -> keras.Model:
    import keras

    if problem := _cnn_problem(template, info):
        raise invalid("spec.model.cnn", problem)
    dropout = template.dropout if params.dropout is None else params.dropout
    shape = info.feature_shape
    layers: list[keras.Layer] = [keras.Input(shape)]
    if len(shape) == 2:
        layers.append(keras.layers.Reshape((*shape, 1)))
    for count in template.filters:
        layers.append(keras.layers.Conv2D(count, 3, padding="same", activation="relu"))
        layers.append(keras.layers.MaxPooling2D(2))
    layers.append(keras.layers.Flatten())
    layers.append(keras.layers.Dense(template.dense_units, activation="relu"))
    if dropout > 0:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(info.num_classes, activation="softmax"))
    return keras.Sequential(layers, name="cnn")


def build_body(source: ModelSource, params: TrialParams, info: DatasetInfo) -> keras.Model:
    """The model without normalization; raises InvalidArgument when it cannot fit `info`."""
    if isinstance(source, MlpTemplate):
        return _mlp_body(source, params, info)
    if isinstance(source, CnnTemplate):
        return _cnn_body(source, params, info)
    assert isinstance(source, KerasJsonModel)
    return _keras_json_body(source.json, info)


def check_model_fits(source: ModelSource, params: TrialParams, info: DatasetInfo) -> None:
    """Raise InvalidArgument unless the model builds for the dataset's shapes."""
    if isinstance(source, CnnTemplate):
        if problem := _cnn_problem(source, info):
            raise invalid("spec.model.cnn", problem)
        return
    if isinstance(source, KerasJsonModel):
        _keras_json_body(source.json, info)


def normalization_layer(mean: np.ndarray, std: np.ndarray) -> keras.Layer:
    """A Normalization layer with the train split's statistics set, not adapted."""
    import keras

    variance = np.square(std.astype(np.float64))
    variance = np.where(variance < MIN_VARIANCE, 1.0, variance).astype(np.float32)
    axis = -1 if mean.ndim == 1 else tuple(range(1, mean.ndim + 1))
    return keras.layers.Normalization(
        axis=axis, mean=mean.astype(np.float32), variance=variance, name="normalization"
    )


def make_optimizer(name: str, learning_rate: float) -> keras.Optimizer:
    import keras

    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return optimizers[name](learning_rate=learning_rate)


def build_model(
    source: ModelSource,
    params: TrialParams,
    info: DatasetInfo,
    mean: np.ndarray,
    std: np.ndarray,
) -> keras.Model:
    """`x -> normalization -> body`, compiled for sparse integer labels."""
    import keras

    body = build_body(source, params, info)
    inputs = keras.Input(info.feature_shape, name=INPUT_NAME)
    outputs = body(normalization_layer(mean, std)(inputs))
    model = keras.Model(inputs, outputs, name="tfmesh_model")
    model.compile(
        optimizer=make_optimizer(params.optimizer, params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
