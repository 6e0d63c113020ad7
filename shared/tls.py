"""One TLS set-up for every server and every client of a process.

A process has at most one identity (a certificate and key, used to serve and, under
mutual TLS, to call) and trusts one CA for its peers. `TlsFiles` holds the four files:
`ca_file` (the CA that signs the servers this process calls), `cert_file` and `key_file`
(this process's own), and `client_ca_file` (when set, this process's servers require
client certificates signed by it: mutual TLS). They come from `TFMESH_TLS_CA_FILE`,
`TFMESH_TLS_CERT_FILE`, `TFMESH_TLS_KEY_FILE` and `TFMESH_TLS_CLIENT_CA_FILE`, which a
service's own `<PREFIX>TLS_*` override; from these come gRPC server and channel
credentials, and the ssl contexts of the HTTP servers and clients. With no files set,
everything is plaintext, as before."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

GLOBAL_PREFIX = "TFMESH_TLS_"
FIELDS = ("ca_file", "cert_file", "key_file", "client_ca_file")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @property
    def serves_tls(self) -> bool:
        return self.cert_file is not None and self.key_file is not None

    @property
    def calls_tls(self) -> bool:
        return self.ca_file is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for a gRPC server; mutual when a client CA is set."""
        if not self.serves_tls:
            return None
        import grpc  # here, not at the top: settings import this module, cores import settings

        assert self.cert_file is not None and self.key_file is not None
        client_ca = self.client_ca_file.read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials of a channel to a TLS server, presenting this process's certificate
        when it has one (mutual TLS); None for plaintext."""
        if not self.calls_tls:
            return None
        import grpc

        assert self.ca_file is not None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )

    def client_context(self) -> ssl.SSLContext | None:
        """An ssl context for HTTPS calls (verifying with the CA, presenting the identity)."""
        if not self.calls_tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.cert_file and self.key_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def scheme(self) -> str:
        """`https` where this process calls peers over TLS, else `http`."""
        return "https" if self.calls_tls else "http"


def uvicorn_tls(tls: TlsFiles | None) -> dict[str, Any]:
    """uvicorn's settings for serving HTTPS with these files ({} for plain HTTP)."""
    if tls is None or not tls.serves_tls:
        return {}
    settings: dict[str, Any] = {
        "ssl_certfile": str(tls.cert_file),
        "ssl_keyfile": str(tls.key_file),
    }
    if tls.client_ca_file:
        settings["ssl_ca_certs"] = str(tls.client_ca_file)
        settings["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return settings


def tls_from_environment(environ: dict[str, str] | None = None) -> TlsFiles:
    """The process-wide `TFMESH_TLS_*` files (what the CLI and the stack's probes use)."""
    source = os.environ if environ is None else environ
    values = {}
    for name in FIELDS:
        value = source.get(f"{GLOBAL_PREFIX}{name.upper()}")
        values[name] = Path(value) if value else None
    return TlsFiles(**values)


def is_handshake_failure(details: str) -> bool:
    """Whether a call's UNAVAILABLE details say TLS failed (a CA that does not sign the
    server's certificate; a server that closed the socket on a client without an accepted
    certificate, or on plaintext), not that the peer is down: retrying never heals the
    former."""
    text = details.lower()
    return "handshake" in text or "socket closed" in text
