"""Product modules stay under 450 lines and functions under 60 (generated code, database
migrations and tests aside), so each can be read as one piece."""

from __future__ import annotations

import ast

from tests.support.processes import REPO

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
PRODUCT = ("services", "shared", "gateway", "cli")


def oversized() -> set[str]:
    found = set()
    for root in PRODUCT:
        for path in (REPO / root).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = str(path.relative_to(REPO))
            text = path.read_text()
            if len(text.splitlines()) > MAX_MODULE_LINES:
                found.add(name)
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    assert node.end_lineno is not None
                    if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                        found.add(f"{name}:{node.name}")
    return found


def test_modules_and_functions_stay_small():
    assert oversized() == set(), "modules or functions over the limits"
