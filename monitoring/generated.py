"""Generated files kept in the repository: write them, or (`--check`) name the ones that
regenerating would change, the way `make proto`'s check treats generated code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stale(expected: dict[Path, str], owned: list[Path]) -> list[Path]:
    """Files whose text differs from `expected` (or that are missing), and files in `owned`
    (what the generator wrote before) that it no longer writes."""
    changed = [p for p, text in expected.items() if not p.is_file() or p.read_text() != text]
    leftover = [p for p in owned if p not in expected]
    return sorted(changed + leftover)


def write(expected: dict[Path, str], owned: list[Path]) -> None:
    for path in owned:
        if path not in expected:
            path.unlink()
    for path, text in expected.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(
    argv: list[str],
    command: str,
    expected: Callable[[], dict[Path, str]],
    owned: Callable[[], list[Path]],
) -> int:
    """`python -m <command> [--check]`: write the files, or exit 1 naming the stale ones."""
    parser = argparse.ArgumentParser(prog=f"python -m {command}")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file is stale"
    )
    arguments = parser.parse_args(argv)
    files = expected()
    if not arguments.check:
        write(files, owned())
        return 0
    outdated = stale(files, owned())
    for path in outdated:
        print(f"stale: {path.relative_to(REPO)}", file=sys.stderr)
    if outdated:
        print(f"run `python -m {command}` to regenerate", file=sys.stderr)
        return 1
    return 0
