"""The architecture picture is rendered from its current source: `make docs` writes the
sha256 of docs/architecture.dot into docs/architecture.svg, so an edited source with a
picture left behind fails here (without needing Graphviz to run the test)."""

from __future__ import annotations

import hashlib
import re

from tests.support.processes import REPO

SOURCE = REPO / "docs" / "architecture.dot"
PICTURE = REPO / "docs" / "architecture.svg"


def test_the_picture_is_rendered_from_the_current_source():
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    stamp = re.search(
        r"rendered from architecture\.dot, sha256 ([0-9a-f]{64})", PICTURE.read_text()
    )
    assert stamp, "docs/architecture.svg was not rendered by `make docs`"
    assert stamp.group(1) == digest, "docs/architecture.dot changed: run `make docs`"


def test_the_picture_shows_every_service():
    picture = PICTURE.read_text()
    for service in ("gateway", "data", "training", "registry", "front ends", "model owner"):
        assert service in picture, f"{service} is not in docs/architecture.svg"
