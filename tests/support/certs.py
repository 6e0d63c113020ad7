"""Throw-away X.509 material for TLS tests, signed by cli.pki's `issue`.

`make_pki(directory)` writes a self-signed CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate, all signed by that CA, as PEM files; a second call
with another directory gives an unrelated CA (a stranger's certificates)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID

from cli.pki import LOOPBACK, issue, write_certificate, write_key


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path, organisation: str = "tfmesh-test") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    authority = issue(f"{organisation} CA", None, is_ca=True)
    server = issue(
        "tfmesh-server", authority, usage=[ExtendedKeyUsageOID.SERVER_AUTH], alt_names=LOOPBACK
    )
    client = issue("tfmesh-client", authority, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    pki = Pki(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    write_certificate(authority[0], pki.ca_cert)
    write_certificate(server[0], pki.server_cert)
    write_certificate(client[0], pki.client_cert)
    write_key(server[1], pki.server_key)
    write_key(client[1], pki.client_key)
    return pki
