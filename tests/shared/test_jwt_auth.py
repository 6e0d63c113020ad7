"""Bearer JWTs: tokens signed by a key of the configured JWKS (a file, or a URL served here
on loopback) name principals with roles; expired, foreign, mis-addressed or HMAC-forged
tokens are refused as unknown callers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import Authenticator, authenticator_for
from shared.errors import PermissionDenied, Unauthenticated
from shared.settings import SecuritySettings, SettingsError

SET_ALIAS = "/tfmesh.registry.v1.RegistryService/SetAlias"
ISSUER = "https://issuer.example"
AUDIENCE = "tfmesh"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_of(key: rsa.RSAPrivateKey, kid: str) -> dict:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}


def token(key, kid: str = "k1", **claims) -> str:  # type: ignore[no-untyped-def]
    body = {
        "sub": "alice@example",
        "roles": ["deployer"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 300,
        **claims,
    }
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def hmac_forged(key: rsa.RSAPrivateKey) -> str:
    """HS256 over the claims, keyed with the public key's PEM, assembled by hand (PyJWT
    will not sign so)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    claims = {"sub": "mallory", "roles": ["admin"], "iss": ISSUER, "aud": AUDIENCE}
    body = part(json.dumps({**claims, "exp": int(time.time()) + 60}).encode())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(signature)}"


@pytest.fixture
def key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
def authenticator(tmp_path, key) -> Authenticator:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(key, "k1")))
    settings = SecuritySettings(
        auth_jwks=str(path), auth_jwt_issuer=ISSUER, auth_jwt_audience=AUDIENCE
    )
    found = authenticator_for(settings)
    assert found is not None
    return found


def test_a_signed_token_names_its_principal_with_its_known_roles(authenticator, key):
    principal = authenticator.check(
        SET_ALIAS, f"Bearer {token(key, roles=['deployer', 'root'])}", []
    )
    assert principal is not None and principal.name == "alice@example"
    assert principal.roles == frozenset({"deployer"})
    scoped = authenticator.principal(f"Bearer {token(key, roles='viewer predictor')}", [])
    assert scoped is not None and scoped.roles == frozenset({"viewer", "predictor"})


def test_a_token_without_the_permission_is_denied(authenticator, key):
    with pytest.raises(PermissionDenied, match="alice@example may not call"):
        authenticator.check(SET_ALIAS, f"Bearer {token(key, roles=['viewer'])}", [])


@pytest.mark.parametrize(
    "forge",
    [
        lambda key: token(key, exp=int(time.time()) - 10),  # expired
        lambda key: token(key, iss="https://elsewhere"),  # another issuer
        lambda key: token(key, aud="someone-else"),  # another audience
        lambda key: token(new_key()),  # a key not in the set
        lambda key: token(key, kid="k9"),  # an unknown key id
        lambda key: token(key)[:-4] + "AAAA",  # a broken signature
        lambda key: jwt.encode({"roles": ["admin"], "exp": int(time.time()) + 60}, key, "RS256"),
        # HMAC with the public key as the secret (the classic algorithm confusion).
        lambda key: hmac_forged(key),
    ],
)
def test_tokens_that_do_not_verify_are_unauthenticated(authenticator, key, forge):
    forged = forge(key)
    with pytest.raises(Unauthenticated):
        authenticator.check(SET_ALIAS, f"Bearer {forged}", [])


def test_a_rotated_key_file_is_read_again(tmp_path, key):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(key, "k1")))
    found = authenticator_for(SecuritySettings(auth_jwks=str(path)))
    assert found is not None
    rotated = new_key()
    time.sleep(0.01)
    path.write_text(json.dumps(jwks_of(rotated, "k2")))
    assert found.principal(f"Bearer {token(rotated, kid='k2')}", []) is not None
    assert found.principal(f"Bearer {token(key)}", []) is None


@pytest.fixture
def jwks_url(key) -> Iterator[str]:
    document = json.dumps(jwks_of(key, "k1")).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


def test_keys_from_a_jwks_url(jwks_url, key):
    found = authenticator_for(SecuritySettings(auth_jwks=jwks_url, auth_jwt_issuer=ISSUER))
    assert found is not None
    principal = found.principal(f"Bearer {token(key, aud=None)}", [])
    assert principal is not None and principal.name == "alice@example"


def test_a_missing_key_file_stops_the_start_naming_the_variable(tmp_path):
    with pytest.raises(ValueError, match="AUTH_JWKS .* neither a readable file"):
        SecuritySettings(auth_jwks=str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SettingsError, match="TFMESH_AUTH_JWKS"):
        authenticator_for(SecuritySettings(auth_jwks=str(bad)))
