"""Real X.509 material for the TLS tests, made with `cryptography`: a CA, a server certificate for
localhost / 127.0.0.1 that it signed, a client certificate it signed, and a client certificate
from a second CA that the server does not trust. Imported by the TLS tests; no fixtures here."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclasses.dataclass(frozen=True)
class Pem:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


@dataclasses.dataclass(frozen=True)
class TlsMaterial:
    ca: Pem  # signs the server's and the trusted client's certificates
    server: Pem  # for localhost and 127.0.0.1
    client: Pem  # signed by `ca`
    untrusted_ca: Pem  # a second CA
    untrusted_client: Pem  # signed by `untrusted_ca`


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pem:
    pem = Pem(folder / f"{stem}.crt", folder / f"{stem}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pem


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)  # cert and CRL signing
        builder = builder.add_extension(usage, critical=True)
    else:
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _issue(
    folder: Path, stem: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], *, server: bool = False
) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(folder, stem, _certificate(stem, key, issuer, server=server), key)


def make_tls_material(folder: Path) -> TlsMaterial:
    """Write every certificate and key under `folder` (EC P-256: quick to make)."""
    folder.mkdir(parents=True, exist_ok=True)
    cas = []
    for stem in ("ca", "untrusted-ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"Facet test {stem}", key, None, ca=True)
        cas.append((_write(folder, stem, cert, key), (cert, key)))
    (ca, ca_pair), (untrusted_ca, untrusted_pair) = cas
    return TlsMaterial(
        ca=ca,
        server=_issue(folder, "server", ca_pair, server=True),
        client=_issue(folder, "client", ca_pair),
        untrusted_ca=untrusted_ca,
        untrusted_client=_issue(folder, "untrusted-client", untrusted_pair),
    )


def make_self_signed(folder: Path, stem: str = "self-signed") -> Pem:
    """A self-signed server certificate for localhost / 127.0.0.1 (no CA): what a quick test
    makes, and what `facet up --tls-cert` trusts without `--tls-ca`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(folder, stem, _certificate("localhost", key, None, server=True), key)


def _load(pem: Pem) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = serialization.load_pem_private_key(pem.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.load_pem_x509_certificate(pem.cert.read_bytes()), key


def make_expired_server(folder: Path, ca: Pem, stem: str = "expired-server") -> Pem:
    """A server certificate for localhost that `ca` signed and that expired yesterday."""
    issuer_cert, issuer_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return _write(folder, stem, cert, key)


def write_encrypted_key(pem: Pem, path: Path, password: bytes = b"secret") -> Path:
    """`pem`'s private key, encrypted with `password` (PKCS#8 PEM): what a key made without -nodes looks like."""
    _, key = _load(pem)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    return path
