"""`shared.names`: the one naming rule for user-chosen names, by example and by property."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import FieldViolation
from shared.names import MAX_NAME_LENGTH, check_name, name_problem

GOOD_NAMES = ["iris", "Iris-v2", "a", "9lives", "model_1.0", "x" * MAX_NAME_LENGTH, "a.b-c_d"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_pass(name: str) -> None:
    assert name_problem(name) is None
    assert check_name("model.name", name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 300, "at most 128"),
        ("x" * (MAX_NAME_LENGTH + 1), "at most 128"),
        ("../x", "path separators"),
        ("a/b", "path separators"),
        ("a\\b", "path separators"),
        ("a..b", "'..'"),
        ("..", "'..'"),
        (".hidden", "start with a letter or digit"),
        ("-flag", "start with a letter or digit"),
        ("_private", "start with a letter or digit"),
        ("has space", "only letters"),
        ("emoji\N{SNOWMAN}", "only letters"),
        ("caf\N{LATIN SMALL LETTER E WITH ACUTE}", "only letters"),
        ("name\n", "only letters"),
        ("name\x00", "only letters"),
        ("a:b", "only letters"),
    ],
)
def test_bad_names_are_rejected_with_a_reason(name: str, reason: str) -> None:
    problem = name_problem(name)
    assert problem is not None and reason in problem
    assert check_name("model.name", name) == FieldViolation("model.name", problem)


SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@given(st.text(max_size=MAX_NAME_LENGTH + 20))
def test_accepted_names_are_safe_in_paths_urls_and_labels(name: str) -> None:
    if name_problem(name) is None:
        assert SAFE.fullmatch(name)
        assert ".." not in name
        assert name not in {".", ".."}


@given(st.from_regex(SAFE, fullmatch=True).filter(lambda name: ".." not in name))
def test_names_following_the_rule_are_accepted(name: str) -> None:
    assert name_problem(name) is None
