"""Inputs checked against a model version's signature before they reach its batch queue.

Every problem becomes a field violation (unknown or missing input names, dtypes, ranks,
dimensions, empty tensors, row counts that differ between inputs or exceed the batch
size), all reported at once as one InvalidArgument. Fields are named by the core's paths,
`inputs[<name>]` and `output_filter`; each protocol's adapter rewrites them into its own
(KServe's inputs are numbered, for one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from services.inference.runtimes import Signature, TensorSpec
from shared.errors import FieldViolation, InvalidArgument, invalid

OUTPUT_FILTER_FIELD = "output_filter"


def input_field(name: str) -> str:
    """The core's path of the input named `name`."""
    return f"inputs[{name}]"


def _shape_text(spec: TensorSpec) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in spec.shape) + "]"


def _problems(value: np.ndarray, spec: TensorSpec) -> list[str]:
    if value.dtype != spec.dtype:
        return [f"dtype {value.dtype.name}, the model takes {spec.dtype.name}"]
    if value.ndim != len(spec.shape):
        return [
            f"rank {value.ndim} (shape {list(value.shape)}), the model takes rank "
            f"{len(spec.shape)} (shape {_shape_text(spec)}, rows first)"
        ]
    problems = []
    if value.shape[0] == 0:
        problems.append("empty: the tensor has no rows")
    for axis, (size, expected) in enumerate(zip(value.shape, spec.shape, strict=True)):
        if axis and expected is not None and size != expected:
            problems.append(f"dimension {axis} is {size}, the model takes {expected}")
        elif axis and size == 0:
            problems.append(f"dimension {axis} is empty")
    return problems


def validate_inputs(
    inputs: Mapping[str, np.ndarray],
    signature: Signature,
    max_rows: int,
) -> int:
    """The request's row count; raises InvalidArgument naming every bad field."""
    violations: list[FieldViolation] = []
    expected = ", ".join(spec.name for spec in signature.inputs)
    for name in inputs:
        if signature.input(name) is None:
            problem = f"unknown input {name!r}; the model takes {expected}"
            violations.append(FieldViolation(input_field(name), problem))
    rows: dict[str, int] = {}
    for spec in signature.inputs:
        value = inputs.get(spec.name)
        if value is None:
            violations.append(FieldViolation(input_field(spec.name), "missing input"))
            continue
        problems = _problems(value, spec)
        violations += [FieldViolation(input_field(spec.name), p) for p in problems]
        if not problems:
            rows[spec.name] = value.shape[0]
    if len(set(rows.values())) > 1:
        counts = ", ".join(f"{name}: {count}" for name, count in rows.items())
        violations.append(
            FieldViolation(input_field(next(iter(rows))), f"inputs differ in rows ({counts})")
        )
    if violations:
        raise InvalidArgument(violations)
    count = next(iter(rows.values()))
    if count > max_rows:
        raise invalid(
            input_field(signature.inputs[0].name),
            f"{count} rows, more than this model's queue holds ({max_rows} rows: "
            "max_enqueued_batches x max_batch_size)",
        )
    return count


def check_output_filter(names: Sequence[str], signature: Signature) -> None:
    known = {spec.name for spec in signature.outputs}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise invalid(
            OUTPUT_FILTER_FIELD, f"unknown outputs {unknown}; the model returns {sorted(known)}"
        )
