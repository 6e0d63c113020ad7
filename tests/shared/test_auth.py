"""shared.auth without sockets: the tokens file, bearer parsing, certificate identities,
and the refusals' codes."""

from __future__ import annotations

import json

import pytest

from shared.auth import Authenticator, TokenBook, authenticator_for, bearer_token, token_sha256
from shared.errors import PermissionDenied, Unauthenticated
from shared.settings import SecuritySettings, SettingsError

PRINCIPALS = [
    {"name": "alice", "roles": ["admin"], "token_sha256": token_sha256("a-token")},
    {"name": "vera", "roles": ["viewer"], "token_sha256": token_sha256("v-token")},
    {"name": "training", "roles": ["trainer"], "certificate_cn": "tfmesh training"},
]


@pytest.fixture
def authenticator(tmp_path) -> Authenticator:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"principals": PRINCIPALS}))
    return Authenticator(TokenBook.load(path))


def test_bearer_scheme_is_case_insensitive_and_other_schemes_are_not_tokens() -> None:
    assert bearer_token("Bearer abc") == bearer_token("bEaReR abc") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None


def test_principals_by_token_and_by_certificate(authenticator: Authenticator) -> None:
    assert authenticator.principal("Bearer a-token", []).name == "alice"
    assert authenticator.principal("", ["tfmesh training"]).name == "training"
    assert authenticator.principal("Bearer wrong", ["tfmesh training"]) is None
    assert authenticator.principal("", ["someone else"]) is None


def test_refusals_say_unauthenticated_or_permission_denied(authenticator: Authenticator) -> None:
    method = "/tfmesh.registry.v1.RegistryService/SetAlias"
    with pytest.raises(Unauthenticated):
        authenticator.check(method, "", [])
    with pytest.raises(PermissionDenied, match="vera may not call .*SetAlias: it needs deploy"):
        authenticator.check(method, "Bearer v-token", [])
    authenticator.check(method, "Bearer a-token", [])
    # A method missing from the table is refused even to an admin.
    with pytest.raises(PermissionDenied, match="not in the table"):
        authenticator.check("/some.Service/Unknown", "Bearer a-token", [])
    # Open methods need nobody.
    authenticator.check("/grpc.health.v1.Health/Check", "", [])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"principals": [{"roles": ["admin"]}]}, "no name"),
        ({"principals": [{"name": "x", "roles": ["root"]}]}, "unknown roles"),
        ({"principals": [{"name": "x", "token_sha256": "abc"}]}, "not a sha256"),
    ],
)
def test_a_bad_tokens_file_stops_the_start_naming_the_variable(tmp_path, document, message):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(document))
    with pytest.raises(SettingsError, match=f"TFMESH_AUTH_TOKENS_FILE: .*{message}"):
        authenticator_for(SecuritySettings(auth_tokens_file=path))
    assert authenticator_for(SecuritySettings()) is None
