"""The gateway's bearer-token check, shared by its web framework's middleware and the
data-plane forwarder. HTTP auth schemes are case-insensitive (RFC 9110), so `bearer` and
`Bearer` both count; the token is compared in constant time."""

from __future__ import annotations

import hmac


def bearer_matches(authorization: bytes, token: str) -> bool:
    scheme, _, given = authorization.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())
