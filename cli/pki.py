"""A local certificate authority for `tfmesh up --tls`, made with the `cryptography` package.

`local_pki(directory, names)` writes (once; later calls reuse the files) a self-signed CA
and, for each name, a certificate and key signed by it, good for serving on 127.0.0.1 and
localhost and for calling as a client (mutual TLS), valid for a year. Keys are P-256, PEM,
readable by their owner only. `issue` is the one function that signs, also used by tests
that need an unrelated CA."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
BOTH_SIDES = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalPki:
    ca_cert: Path
    identities: dict[str, Identity]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    is_ca: bool = False,
    usage: list[x509.ObjectIdentifier] | None = None,
    alt_names: list[x509.GeneralName] | None = None,
    days: int = 365,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `subject` signed by `issuer` (self-signed when None), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def write_certificate(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)


def local_pki(directory: Path, names: list[str]) -> LocalPki:
    """The CA and one identity per name under `directory`, made where missing."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    if ca_cert.exists() and ca_key.exists():
        authority = (
            x509.load_pem_x509_certificate(ca_cert.read_bytes()),
            serialization.load_pem_private_key(ca_key.read_bytes(), password=None),
        )
    else:
        authority = issue("tfmesh local CA", None, is_ca=True, days=3650)
        write_certificate(authority[0], ca_cert)
        write_key(authority[1], ca_key)
    identities = {}
    for name in names:
        identity = Identity(directory / f"{name}.pem", directory / f"{name}-key.pem")
        if not (identity.cert.exists() and identity.key.exists()):
            certificate, key = issue(
                f"tfmesh {name}",
                authority,  # type: ignore[arg-type]
                usage=BOTH_SIDES,
                alt_names=[*LOOPBACK, x509.DNSName(name)],
            )
            write_certificate(certificate, identity.cert)
            write_key(key, identity.key)
        identities[name] = identity
    return LocalPki(ca_cert, identities)
