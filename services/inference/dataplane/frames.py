"""The descriptor format between front ends and the model owner: the one module both sides
share, so neither knows more of the other than what is written here.

On the socket, a frame is a 4-byte little-endian length and a serialized
`tfmesh.inference.dataplane.v1.Frame`. Tensors lie in the front end's slab: numeric
arrays as their C-order little-endian bytes, BYTES (string) tensors as Triton lays them
out, each element a 4-byte little-endian length and its bytes. A `TensorRef` says where;
an output with no reserved room comes back inline in its ref. The catalog travels as a
frame too, converted here to and from the type the servicers use; a control call
(services.inference.controls) travels as its method's name and arguments, and its answer
as the method's result, both as JSON written and read through the method's own type
hints (pydantic), so a new control call needs nothing here."""

from __future__ import annotations

import functools
import inspect
import math
import struct
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pydantic_core
from google.rpc import status_pb2
from pydantic import TypeAdapter

from services.inference.batcher import BatchingOptions
from services.inference.catalog import Catalog, ModelView, VersionState, VersionView
from services.inference.controls import Controls
from services.inference.routing import RoutingTable
from services.inference.runtimes import Signature, TensorSpec
from shared.errors import DomainError
from tfmesh.inference.dataplane.v1 import dataplane_pb2 as dp

LENGTH = struct.Struct("<I")
BYTES_DTYPE = "bytes"
# A frame larger than this is a broken peer, not a message (frames carry no tensors).
MAX_FRAME_BYTES = 64 * 1024 * 1024


def encode(frame: dp.Frame) -> bytes:
    body = frame.SerializeToString()
    return LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Cuts a byte stream into frames; bytes of an incomplete frame wait for the rest."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[dp.Frame]:
        self._buffer += data
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= LENGTH.size:
            (size,) = LENGTH.unpack_from(buffer, start)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"a frame of {size} bytes: the peer is not speaking frames")
            end = start + LENGTH.size + size
            if len(buffer) < end:
                break
            yield dp.Frame.FromString(bytes(buffer[start + LENGTH.size : end]))
            start = end
        del self._buffer[:start]


# --- tensors in the slab -------------------------------------------------------------------


def _serialized_strings(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        value = item if isinstance(item, bytes) else str(item).encode()
        parts.append(LENGTH.pack(len(value)) + value)
    return b"".join(parts)


def _deserialized_strings(data: memoryview, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    values = []
    offset = 0
    for _ in range(count):
        (size,) = LENGTH.unpack_from(data, offset)
        offset += LENGTH.size
        values.append(bytes(data[offset : offset + size]))
        offset += size
    return np.array(values, dtype=object).reshape(shape)


def is_strings(array: np.ndarray) -> bool:
    return array.dtype.kind in "USO"


def tensor_size(array: np.ndarray) -> int:
    """Bytes `array` takes in a slab."""
    if is_strings(array):
        return sum(
            LENGTH.size + len(v if isinstance(v, bytes) else str(v).encode())
            for v in array.reshape(-1)
        )
    return array.nbytes


def write_tensor(memory, offset: int, name: str, array: np.ndarray) -> dp.TensorRef:
    """Copy `array` into `memory` at `offset`; the ref that reads it back."""
    if is_strings(array):
        data = _serialized_strings(array)
        memory[offset : offset + len(data)] = data
        return dp.TensorRef(
            name=name, dtype=BYTES_DTYPE, shape=array.shape, offset=offset, size=len(data)
        )
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    target = np.ndarray(array.shape, little, buffer=memory, offset=offset)
    target[...] = array
    return dp.TensorRef(
        name=name, dtype=little.str, shape=array.shape, offset=offset, size=array.nbytes
    )


def read_tensor(memory, ref: dp.TensorRef) -> np.ndarray:
    """The tensor `ref` describes: inline, or a view of `memory` (copied for BYTES)."""
    shape = tuple(ref.shape)
    if ref.inline_data:
        data = memoryview(ref.inline_data)
    else:
        data = memoryview(memory)[ref.offset : ref.offset + ref.size]
    if ref.dtype == BYTES_DTYPE:
        return _deserialized_strings(data, shape)
    return np.frombuffer(data, np.dtype(ref.dtype)).reshape(shape)


def reserved_output(spec: TensorSpec, rows: int) -> dp.TensorRef:
    """An output's ref before the call: its size when the signature fixes it, else 0
    (such an output comes back inline)."""
    dims = spec.shape[1:]
    if spec.dtype.kind in "USO" or any(dim is None for dim in dims):
        return dp.TensorRef(name=spec.name)
    shape = (rows, *(int(d) for d in dims if d is not None))
    dtype = spec.dtype.newbyteorder("<") if spec.dtype.byteorder == ">" else spec.dtype
    return dp.TensorRef(
        name=spec.name, dtype=dtype.str, shape=shape, size=math.prod(shape) * dtype.itemsize
    )


def write_output(memory, reserved: dp.TensorRef, array: np.ndarray) -> dp.TensorRef:
    """Put an output where the front end reserved room for it, or inline when it does not
    fit the reservation exactly (a size the signature did not fix)."""
    if (
        reserved.size
        and not is_strings(array)
        and array.dtype.str == reserved.dtype
        and tuple(array.shape) == tuple(reserved.shape)
    ):
        return write_tensor(memory, reserved.offset, reserved.name, array)
    if is_strings(array):
        return dp.TensorRef(
            name=reserved.name,
            dtype=BYTES_DTYPE,
            shape=array.shape,
            size=0,
            inline_data=_serialized_strings(array),
        )
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return dp.TensorRef(
        name=reserved.name,
        dtype=little.dtype.str,
        shape=array.shape,
        inline_data=little.tobytes(),
    )


# --- errors --------------------------------------------------------------------------------


def error_bytes(error: DomainError) -> bytes:
    return error.to_status().SerializeToString()


def error_status(data: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(data)


# --- the catalog ---------------------------------------------------------------------------


def _spec_to_frame(spec: TensorSpec) -> dp.TensorSpec:
    return dp.TensorSpec(
        name=spec.name, dtype=spec.dtype.str, shape=[-1 if d is None else d for d in spec.shape]
    )


def _spec_from_frame(spec: dp.TensorSpec) -> TensorSpec:
    return TensorSpec(
        spec.name, np.dtype(spec.dtype), tuple(None if d < 0 else d for d in spec.shape)
    )


def catalog_to_frame(catalog: Catalog) -> dp.Frame:
    models = []
    for model in catalog.ordered():
        batching = model.batching
        versions = []
        for view in model.versions.values():
            version = dp.Version(
                version=view.version,
                state=view.state.value,
                runtime=view.runtime,
                reason=view.reason,
                device=view.device,
                loaded=view.signature is not None,
            )
            if view.signature is not None:
                version.inputs.extend(_spec_to_frame(s) for s in view.signature.inputs)
                version.outputs.extend(_spec_to_frame(s) for s in view.signature.outputs)
            versions.append(version)
        models.append(
            dp.Model(
                name=model.name,
                runtime=model.runtime,
                batching=dp.Batching(
                    max_batch_size=batching.max_batch_size,
                    batch_timeout_micros=batching.batch_timeout_micros,
                    allowed_batch_sizes=batching.allowed_batch_sizes,
                    num_batch_threads=batching.num_batch_threads,
                    max_enqueued_batches=batching.max_enqueued_batches,
                ),
                versions=versions,
                labels={label: view.version for label, view in model.table.by_label.items()},
                canary_weight=model.table.canary_weight,
            )
        )
    return dp.Frame(catalog=dp.Catalog(revision=catalog.revision, models=models))


def catalog_from_frame(frame: dp.Catalog) -> Catalog:
    models = {}
    for model in frame.models:
        views = {}
        for version in model.versions:
            signature = None
            if version.loaded:
                signature = Signature(
                    tuple(_spec_from_frame(s) for s in version.inputs),
                    tuple(_spec_from_frame(s) for s in version.outputs),
                )
            views[version.version] = VersionView(
                model.name,
                version.version,
                VersionState(version.state),
                version.runtime,
                version.reason,
                version.device,
                signature,
            )
        by_label = {label: views[number] for label, number in model.labels.items()}
        batching = model.batching
        models[model.name] = ModelView(
            model.name,
            model.runtime,
            BatchingOptions(
                max_batch_size=batching.max_batch_size,
                batch_timeout_micros=batching.batch_timeout_micros,
                allowed_batch_sizes=tuple(batching.allowed_batch_sizes),
                num_batch_threads=batching.num_batch_threads,
                max_enqueued_batches=batching.max_enqueued_batches,
            ),
            views,
            RoutingTable(
                {view.version: view for view in by_label.values()},
                by_label,
                model.canary_weight,
            ),
        )
    return Catalog(models, frame.revision)


# --- control calls -----------------------------------------------------------------------


@functools.cache
def _control_types(method: str) -> tuple[dict[str, TypeAdapter[Any]], TypeAdapter[Any]]:
    """The adapters of a `Controls` method's arguments (by name) and of its result."""
    if method.startswith("_") or not callable(getattr(Controls, method, None)):
        raise ValueError(f"{method!r} is not a control call")
    hints = typing.get_type_hints(getattr(Controls, method))
    result = TypeAdapter(hints.pop("return"))
    return {name: TypeAdapter(hint) for name, hint in hints.items()}, result


def _json(value: Any) -> bytes:
    # NaN and infinities written as such (JSON's `null` would not read back as a float):
    # a regressor's feedback may sum to one, and a bad report may carry one.
    return pydantic_core.to_json(value, inf_nan_mode="constants")


def _parsed(data: bytes) -> Any:
    return pydantic_core.from_json(data, allow_inf_nan=True)


def control_to_frame(
    call: int, method: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> dp.Frame:
    """A call of `method` (a `Controls` method) with these arguments."""
    adapters, _ = _control_types(method.__name__)
    bound = inspect.signature(method).bind(None, *args, **kwargs)
    arguments = {
        name: adapters[name].dump_python(value) for name, value in list(bound.arguments.items())[1:]
    }
    return dp.Frame(
        control=dp.Control(call=call, method=method.__name__, arguments=_json(arguments))
    )


def control_from_frame(control: dp.Control) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The `Controls` method a frame calls and its arguments; ValueError for anything else."""
    adapters, _ = _control_types(control.method)
    given = _parsed(control.arguments)
    if not isinstance(given, dict) or set(given) != set(adapters):
        raise ValueError(f"arguments {control.arguments[:200]!r} do not fit {control.method}")
    arguments = {name: adapters[name].validate_python(value) for name, value in given.items()}
    return getattr(Controls, control.method), arguments


def control_answer_to_frame(call: int, method: str, result: Any) -> dp.Frame:
    _, adapter = _control_types(method)
    answer = _json(adapter.dump_python(result))
    return dp.Frame(control_answer=dp.ControlAnswer(call=call, result=answer))


def control_error_to_frame(call: int, error: DomainError) -> dp.Frame:
    return dp.Frame(control_answer=dp.ControlAnswer(call=call, error=error_bytes(error)))


def control_result(method: str, answer: dp.ControlAnswer) -> Any:
    """The result an answer carries, as the method's return type."""
    _, adapter = _control_types(method)
    return adapter.validate_python(_parsed(answer.result))
