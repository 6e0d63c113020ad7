"""Unit tests of input validation against a signature."""

from __future__ import annotations

import numpy as np
import pytest

from services.inference.protocols.kserve.converters import field_renamer
from services.inference.runtimes import Signature, TensorSpec
from services.inference.validation import check_output_filter, validate_inputs
from shared.errors import InvalidArgument

SIGNATURE = Signature(
    inputs=(
        TensorSpec("x", np.dtype("float32"), (None, 4)),
        TensorSpec("mask", np.dtype("int64"), (None, None)),
    ),
    outputs=(TensorSpec("output_0", np.dtype("float32"), (None, 2)),),
)


def good(rows: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.zeros((rows, 4), np.float32), "mask": np.ones((rows, 3), np.int64)}


def violations(inputs, max_rows: int = 8) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as error:
        validate_inputs(inputs, SIGNATURE, max_rows)
    return {v.field: v.description for v in error.value.violations}


def test_valid_inputs_give_their_row_count():
    assert validate_inputs(good(3), SIGNATURE, 8) == 3


def test_wrong_dtype():
    found = violations({**good(), "x": np.zeros((2, 4), np.float64)})
    assert "float64" in found["inputs[x]"] and "float32" in found["inputs[x]"]


def test_wrong_rank():
    found = violations({**good(), "x": np.zeros((2, 4, 1), np.float32)})
    assert "rank 3" in found["inputs[x]"]


def test_wrong_dims():
    found = violations({**good(), "x": np.zeros((2, 5), np.float32)})
    assert "dimension 1 is 5" in found["inputs[x]"]


def test_unknown_and_missing_names_are_both_reported():
    found = violations({"x": np.zeros((2, 4), np.float32), "y": np.zeros((2, 4), np.float32)})
    assert "unknown input 'y'" in found["inputs[y]"]
    assert found["inputs[mask]"] == "missing input"


def test_empty_tensor():
    found = violations(good(0))
    assert "no rows" in found["inputs[x]"]


def test_rows_must_agree_across_inputs_and_fit_a_batch():
    found = violations({**good(2), "mask": np.ones((3, 3), np.int64)})
    assert "differ in rows" in next(iter(found.values()))
    found = violations(good(9), max_rows=8)
    assert "max_batch_size" in found["inputs[x]"]


def test_fields_are_the_cores_paths_that_kserve_renames():
    with pytest.raises(InvalidArgument) as error:
        validate_inputs({"x": np.zeros((1, 5), np.float32)}, SIGNATURE, 8)
    assert {v.field for v in error.value.violations} == {"inputs[x]", "inputs[mask]"}
    # KServe names inputs by their place in the request; one the request lacks is `inputs`.
    renamed = error.value.renamed(field_renamer({"x": 0}))
    assert {v.field for v in renamed.violations} == {"inputs[0]", "inputs"}
    assert renamed.message.startswith("inputs")


def test_unknown_output_filter():
    with pytest.raises(InvalidArgument) as error:
        check_output_filter(["output_0", "logits"], SIGNATURE)
    assert error.value.violations[0].field == "output_filter"
    assert error.value.renamed(field_renamer({})).violations[0].field == "outputs"
    check_output_filter(["output_0"], SIGNATURE)
