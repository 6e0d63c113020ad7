"""Who is calling: principals from bearer tokens and mutual-TLS certificates, checked
against the permission table (shared.permissions) before any handler runs.

A tokens file (`TFMESH_AUTH_TOKENS_FILE`, JSON) lists principals with their roles and the
sha256 of their token (never the token), and optionally the certificate common name that
identifies them under mutual TLS:

    {"principals": [
      {"name": "alice", "roles": ["admin"], "token_sha256": "9f86d0..."},
      {"name": "training", "roles": ["trainer", "deployer"], "token_sha256": "2c26b4...",
       "certificate_cn": "tfmesh training"}
    ]}

A JWKS (`TFMESH_AUTH_JWKS`, shared.jwt_auth) adds principals from signed JWTs: a bearer
token with a JWT's three parts is verified against it, named by its `sub` and given the
roles of its roles claim. With neither a tokens file nor a JWKS, authentication is off
(every call allowed, as before). With either, `Authenticator.check` finds the principal
(`authorization: Bearer <token>` metadata, any case of the scheme; else the client
certificate's common name), refuses an unknown caller
with UNAUTHENTICATED and a missing permission with PERMISSION_DENIED, and returns the
principal, which the interceptor makes `current_principal()` for the handler (the
registry audits it)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from jwt import PyJWTError

from shared.errors import PermissionDenied, Unauthenticated
from shared.jwt_auth import JwtVerifier, looks_like_jwt
from shared.permissions import METHOD_PERMISSIONS, OPEN, ROLE_PERMISSIONS, permissions_of
from shared.settings import SecuritySettings, SettingsError

_CURRENT: ContextVar[Principal | None] = ContextVar("tfmesh_principal", default=None)


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]

    @property
    def permissions(self) -> frozenset[str]:
        return permissions_of(self.roles)

    def may(self, permission: str) -> bool:
        return permission == OPEN or permission in self.permissions


def current_principal() -> Principal | None:
    """The principal of the call being handled; None when authentication is off."""
    return _CURRENT.get()


def act_as(principal: Principal | None) -> None:
    """Make `principal` current for the rest of this call (each call runs in its own
    context, so this never outlives it)."""
    _CURRENT.set(principal)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    token_sha256: str
    certificate_cn: str


class TokenBook:
    """The principals of a tokens file."""

    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: Path) -> TokenBook:
        """Read a tokens file; ValueError names what is wrong with it."""
        document = json.loads(path.read_text()) or {}
        entries = []
        for index, item in enumerate(document.get("principals") or []):
            where = f"{path}: principals[{index}]"
            name = item.get("name")
            roles = item.get("roles") or []
            digest = str(item.get("token_sha256") or "").lower()
            if not name:
                raise ValueError(f"{where}: no name")
            unknown = [role for role in roles if role not in ROLE_PERMISSIONS]
            if unknown:
                raise ValueError(
                    f"{where}: unknown roles {unknown} (known: {list(ROLE_PERMISSIONS)})"
                )
            if digest and len(digest) != 64:
                raise ValueError(f"{where}: token_sha256 is not a sha256 hex digest")
            principal = Principal(str(name), frozenset(roles))
            entries.append(_Entry(principal, digest, str(item.get("certificate_cn") or "")))
        return cls(entries)

    def by_token(self, token: str) -> Principal | None:
        digest = token_sha256(token)
        found = None
        # Every entry is compared, in constant time each, whatever matches.
        for entry in self._entries:
            if entry.token_sha256 and hmac.compare_digest(entry.token_sha256, digest):
                found = entry.principal
        return found

    def by_certificate(self, common_names: Iterable[str]) -> Principal | None:
        names = set(common_names)
        return next(
            (e.principal for e in self._entries if e.certificate_cn and e.certificate_cn in names),
            None,
        )


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    def __init__(self, book: TokenBook | None, jwts: JwtVerifier | None = None) -> None:
        self._book = book
        self._jwts = jwts

    @property
    def enabled(self) -> bool:
        return self._book is not None or self._jwts is not None

    def principal(self, authorization: str, common_names: Iterable[str]) -> Principal | None:
        """The caller: by bearer token (a JWT, or one of the tokens file) when one is
        given, else by certificate."""
        token = bearer_token(authorization) if authorization else None
        if token is not None:
            if self._jwts is not None and looks_like_jwt(token):
                found = self._jwts.principal_of(token)
                if found is not None:
                    return Principal(*found)
            return self._book.by_token(token) if self._book is not None else None
        return self._book.by_certificate(common_names) if self._book is not None else None

    def check(
        self, method: str, authorization: str, common_names: Iterable[str]
    ) -> Principal | None:
        """The caller of a gRPC call, refused unless it may make it (None: nobody checked)."""
        return self.check_permission(
            METHOD_PERMISSIONS.get(method), method, authorization, common_names
        )

    def check_permission(
        self,
        permission: str | None,
        what: str,
        authorization: str,
        common_names: Iterable[str] = (),
    ) -> Principal | None:
        """The caller, refused unless it has `permission` (None: a call no role may make);
        None when authentication is off or the call is open."""
        if not self.enabled or permission == OPEN:
            return None
        principal = self.principal(authorization, common_names)
        if principal is None:
            raise Unauthenticated(
                "this call needs credentials: `authorization: Bearer <token>` of a known "
                "principal, or a client certificate one is known by"
            )
        if permission is None or not principal.may(permission):
            need = permission or "a permission no role has (it is not in the table)"
            raise PermissionDenied(f"{principal.name} may not call {what}: it needs {need}")
        return principal


def require(permission: str, what: str) -> None:
    """Inside a handler: refuse unless the current principal (if any) has `permission`."""
    principal = current_principal()
    if principal is not None and not principal.may(permission):
        raise PermissionDenied(f"{principal.name} may not {what}: it needs {permission}")


def authenticator_for(settings: SecuritySettings) -> Authenticator | None:
    """The authenticator of a process's settings (None: authentication off); a tokens file
    or key set that does not read as one stops the start with SettingsError naming it."""
    book = jwts = None
    if settings.auth_tokens_file is not None:
        try:
            book = TokenBook.load(settings.auth_tokens_file)
        except (OSError, ValueError) as error:
            raise SettingsError(f"TFMESH_AUTH_TOKENS_FILE: {error}") from None
    if settings.auth_jwks:
        try:
            jwts = JwtVerifier(
                settings.auth_jwks,
                settings.auth_jwt_issuer,
                settings.auth_jwt_audience,
                settings.auth_jwt_roles_claim,
            )
        except (OSError, ValueError, PyJWTError) as error:
            raise SettingsError(f"TFMESH_AUTH_JWKS: {error}") from None
    if book is None and jwts is None:
        return None
    return Authenticator(book, jwts)
