"""Principals from JSON Web Tokens, so an OIDC provider or Istio's RequestAuthentication
can issue the bearer tokens the services accept (shared.auth asks this module first when
a bearer token has a JWT's three parts).

The keys are a JWKS (`TFMESH_AUTH_JWKS`): a file, read again when it changes (key
rotation), or an `https://` URL, fetched once and again for a key id it does not know
(PyJWT's client, at most every five minutes). Only asymmetric algorithms are accepted, so
a token signed with the public key as an HMAC secret is refused. A token must be signed by
a key of the set, carry `exp` and `sub`, and match `TFMESH_AUTH_JWT_ISSUER` and
`TFMESH_AUTH_JWT_AUDIENCE` when they are set. Its principal is named by `sub`; its roles
are the claim `TFMESH_AUTH_JWT_ROLES_CLAIM` (default `roles`: a list, or a space-separated
string as in OAuth's `scope`), keeping the roles tfmesh knows."""

from __future__ import annotations

import logging
from pathlib import Path

import jwt

from shared.permissions import ROLE_PERMISSIONS

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class _FileKeys:
    """A JWKS file, read again whenever its modification time changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: float | None = None
        self._keys: jwt.PyJWKSet | None = None
        self._load()

    def _load(self) -> None:
        stamp = self._path.stat().st_mtime
        if stamp != self._stamp:
            self._keys = jwt.PyJWKSet.from_json(self._path.read_text())
            self._stamp = stamp

    def key_for(self, token: str) -> jwt.PyJWK:
        self._load()
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        keys = self._keys.keys
        if kid is None and len(keys) == 1:
            return keys[0]
        for key in keys:
            if key.key_id == kid:
                return key
        raise jwt.PyJWKError(f"no key {kid!r} in the key set")


class _UrlKeys:
    def __init__(self, url: str) -> None:
        self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)

    def key_for(self, token: str) -> jwt.PyJWK:
        return self._client.get_signing_key_from_jwt(token)


class JwtVerifier:
    def __init__(
        self, jwks: str, issuer: str = "", audience: str = "", roles_claim: str = "roles"
    ) -> None:
        remote = jwks.startswith(("https://", "http://"))
        self._keys = _UrlKeys(jwks) if remote else _FileKeys(Path(jwks))
        self._issuer = issuer or None
        self._audience = audience or None
        self._roles_claim = roles_claim

    def principal_of(self, token: str) -> tuple[str, frozenset[str]] | None:
        """(name, roles) of a valid token; None for any token that does not verify."""
        try:
            claims = jwt.decode(
                token,
                self._keys.key_for(token),
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except (jwt.PyJWTError, ValueError, OSError) as error:
            log.info("bearer JWT refused", extra={"reason": str(error)[:200]})
            return None
        granted = claims.get(self._roles_claim, [])
        if isinstance(granted, str):
            granted = granted.split()
        if not isinstance(granted, list):
            return None
        roles = frozenset(r for r in granted if isinstance(r, str) and r in ROLE_PERMISSIONS)
        return str(claims["sub"]), roles
