"""The one naming rule for user-chosen resource names (models, datasets, aliases, jobs).

Names end up in file paths, URLs and metric labels, so they are short, start with a
letter or digit, and contain only letters, digits, `_`, `-` and `.`, never `..`."""

from __future__ import annotations

import re

from shared.errors import FieldViolation

MAX_NAME_LENGTH = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def name_problem(name: str) -> str | None:
    """Why `name` breaks the rule, or None when it is fine."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters (got {len(name)})"
    if "/" in name or "\\" in name:
        return "must not contain path separators"
    if ".." in name:
        return "must not contain '..'"
    if not _NAME.fullmatch(name):
        return "must start with a letter or digit and use only letters, digits, '_', '-', '.'"
    return None


def check_name(field: str, name: str) -> FieldViolation | None:
    problem = name_problem(name)
    return FieldViolation(field, problem) if problem else None
