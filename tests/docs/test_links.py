"""The README and docs/ point only at files in the repository: every relative Markdown link,
and every path written in backticks under one of the repository's folders (the tests and
code that back a claim), exists. A link out of the repository (`../...`) is an error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.processes import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
FOLDERS = "docs|tests|services|gateway|shared|k8s|istio|bench|protos|deploy|cli|.ci"
QUOTED_PATH = re.compile(rf"`((?:{FOLDERS})/[\w./-]*)`")


def referenced_paths(document: Path) -> dict[str, Path]:
    """Each reference as written, with the path it names: links relative to the document,
    backticked paths relative to the repository root."""
    text = document.read_text()
    links = {t: document.parent / t for t in LINK.findall(text) if "://" not in t}
    quoted = {t: REPO / t for t in QUOTED_PATH.findall(text)}
    return {**quoted, **links}


def test_the_documents_reference_paths_at_all():
    assert len(DOCUMENTS) >= 4
    assert sum(len(referenced_paths(document)) for document in DOCUMENTS) >= 20


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_referenced_path_is_in_the_repository(document):
    missing = [
        written
        for written, path in referenced_paths(document).items()
        if not path.resolve().is_relative_to(REPO) or not path.exists()
    ]
    assert not missing, f"{document.name} references paths not in the repository: {missing}"
