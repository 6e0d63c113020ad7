"""`python -m k8s.check [REPO]`: print every problem in the manifests; exit 1 if any."""

from __future__ import annotations

import sys
from pathlib import Path

from k8s.check.render import RenderError
from k8s.check.run import run


def main(argv: list[str]) -> int:
    repo = Path(argv[0] if argv else ".").resolve()
    try:
        problems = run(repo)
    except RenderError as error:
        print(f"manifests-check: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if problems:
        print(f"manifests-check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("manifests-check: all manifests render, validate and cross-check")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
