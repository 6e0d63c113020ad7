"""One vocabulary: the alias names and the serving signature are written once, in
`shared.aliases` and `shared.serving_names`; no other module of the product spells them as
a string literal (the tokenizer finds literals, so prose in docstrings and comments does
not count). The server version reported to clients is the package's."""

from __future__ import annotations

import ast
import io
import tokenize
import tomllib

import pytest

from shared import aliases, serving_names
from tests.support.processes import REPO

PRODUCT = ("services", "gateway", "shared", "cli")
OWNERS = {
    REPO / "shared" / "aliases.py": {aliases.PRODUCTION, aliases.CANARY},
    REPO / "shared" / "serving_names.py": {serving_names.SIGNATURE},
}


def literal_spellings(path, names: set[str]) -> list[str]:
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type != tokenize.STRING:
            continue
        prefix = token.string[: token.string.index(token.string[-1])]
        if "f" not in prefix.lower() and ast.literal_eval(token.string) in names:
            found.append(f"{path.relative_to(REPO)}:{token.start[0]}")
    return found


@pytest.mark.parametrize("owner", OWNERS, ids=lambda path: path.name)
def test_only_the_owning_module_spells_its_names(owner):
    names = OWNERS[owner]
    assert literal_spellings(owner, names), "the check finds nothing even in the owner"
    modules = [p for folder in PRODUCT for p in (REPO / folder).rglob("*.py")]
    assert len(modules) > 50
    spelled = [
        place for path in modules if path != owner for place in literal_spellings(path, names)
    ]
    assert not spelled, f"{sorted(names)} spelled outside {owner.name}: {spelled}"


def test_the_server_version_is_the_package_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == serving_names.SERVER_VERSION
