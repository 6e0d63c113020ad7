"""How the CLI prints: rich tables for people, `--json` for scripts (proto3 JSON mapping,
one document, or one per line for streams)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


def _convert(item: Any) -> Any:
    if isinstance(item, Message):
        return json_format.MessageToDict(
            item, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    return item


def as_json(value: Message | Sequence[Any] | dict[str, Any]) -> str:
    if isinstance(value, Message | dict):
        return json.dumps(_convert(value), indent=2)
    return json.dumps([_convert(v) for v in value], indent=2)


def print_json(value: Message | Sequence[Any] | dict[str, Any]) -> None:
    print(as_json(value))


def print_json_line(value: Message | dict[str, Any]) -> None:
    """One compact JSON document per line (NDJSON), flushed: for streams read by scripts."""
    print(json.dumps(_convert(value)), flush=True)


def table(title: str, columns: list[str], rows: list[list[Any]], show_header: bool = True) -> None:
    view = Table(title=title, title_justify="left", show_header=show_header)
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*(str(cell) for cell in row))
    console.print(view)
