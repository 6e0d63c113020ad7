"""The alias names are written once: no module of the product but `shared.aliases` spells
`"production"` or `"canary"` as a string literal (the tokenizer finds them, so prose in
docstrings and comments does not count)."""

from __future__ import annotations

import ast
import io
import tokenize

from shared import aliases
from tests.support.processes import REPO

PRODUCT = ("services", "gateway", "shared", "cli")
NAMES = {aliases.PRODUCTION, aliases.CANARY}


def literal_spellings(path) -> list[str]:
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type != tokenize.STRING:
            continue
        prefix = token.string[: token.string.index(token.string[-1])]
        if "f" not in prefix.lower() and ast.literal_eval(token.string) in NAMES:
            found.append(f"{path.relative_to(REPO)}:{token.start[0]}")
    return found


def test_only_the_aliases_module_spells_the_alias_names():
    modules = [p for folder in PRODUCT for p in (REPO / folder).rglob("*.py")]
    assert len(modules) > 50
    spelled = [
        place
        for path in modules
        if path != REPO / "shared" / "aliases.py"
        for place in literal_spellings(path)
    ]
    assert not spelled, f"alias names spelled outside shared/aliases.py: {spelled}"


def test_the_aliases_module_is_found_by_the_check():
    assert literal_spellings(REPO / "shared" / "aliases.py")
