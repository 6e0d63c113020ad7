"""Opaque page tokens for keyset pagination: the last key seen, base64-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from shared.errors import invalid


def encode_token(last_key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_key}).encode()).decode()


def decode_token(token: str, field: str = "page_token") -> Any:
    """The key a token points after, or None for the first page."""
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid(field, "not a page token this server issued") from None


def decode_id_token(token: str, field: str = "page_token") -> int | None:
    """The row id a token points after (tokens of id-ordered lists), or None."""
    after = decode_token(token, field)
    if after is not None and not isinstance(after, int):
        raise invalid(field, "not a page token this server issued")
    return after


def page_size(requested: int, default: int, field: str = "page_size") -> int:
    if requested < 0:
        raise invalid(field, "must be >= 0")
    return min(requested or default, 1000)
