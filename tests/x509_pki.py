"""A throwaway PKI for the client-certificate tests: a client CA with a CRL, a server certificate for
the proxy, and client certificates that are good, expired, untrusted, wrong-EKU, EKU-less and revoked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def pem(self) -> str:
        return _pem(self.cert).decode()

    @property
    def escaped_pem(self) -> str:
        """As nginx's $ssl_client_escaped_cert and Envoy's XFCC Cert= give it."""
        return quote(self.pem, safe="")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass
class CA:
    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path
    revoked: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path, name: str) -> "CA":
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iam-proxy tests"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        path = directory / f"{name}.pem"
        path.write_bytes(_pem(cert))
        return cls(name, cert, key, path)

    def issue(self, directory: Path, file_name: str, cn: str, *, eku: list | None = None,
              dns: tuple[str, ...] = (), emails: tuple[str, ...] = (), uris: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), ou: tuple[str, ...] = (), not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org")]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit) for unit in ou]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
                   .not_valid_after(not_after or NOW + dt.timedelta(days=7))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                  critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        sans = ([x509.DNSName(d) for d in dns] + [x509.RFC822Name(e) for e in emails]
                + [x509.UniformResourceIdentifier(u) for u in uris]
                + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips])
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = directory / f"{file_name}.pem", directory / f"{file_name}-key.pem"
        cert_path.write_bytes(_pem(cert))
        key_path.write_bytes(_key_pem(key))
        return Issued(cert, key, cert_path, key_path)

    def write_crl(self, path: Path, revoked: list[Issued] = (), next_update_days: int = 7) -> Path:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(NOW - dt.timedelta(minutes=5))
                   .next_update(NOW + dt.timedelta(days=next_update_days)))
        for item in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(item.cert.serial_number)
                .revocation_date(NOW - dt.timedelta(minutes=1)).build())
        crl = builder.sign(self.key, hashes.SHA256())
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        tmp.replace(path)
        return path


CERT_POLICY = """package x509test

import rego.v1

# Echo what the policy sees about the certificate into request headers, so the test can check it.
decision := {
	"allowed": true,
	"headers": {
		"x-policy-cert-subject": input.identity.cert.subject,
		"x-policy-source-certificate": input.attributes.source.certificate,
	},
} if {
	startswith(input.attributes.source.certificate, "-----BEGIN%20CERTIFICATE-----")
} else := {"allowed": false, "reasons": ["no client certificate in the input"]}
"""


CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]
SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]


@dataclass
class PKI:
    """Everything a client-certificate test needs, written under one directory."""

    directory: Path
    ca: CA
    other_ca: CA
    server: Issued
    good: Issued
    spiffe: Issued
    expired: Issued
    untrusted: Issued
    wrong_eku: Issued
    no_eku: Issued
    revoked: Issued
    crl_path: Path

    @classmethod
    def create(cls, directory: Path) -> "PKI":
        directory.mkdir(parents=True, exist_ok=True)
        ca = CA.create(directory, "client-ca")
        other = CA.create(directory, "other-ca")
        server = ca.issue(directory, "server", "localhost", eku=SERVER, dns=("localhost",), ips=("127.0.0.1",))
        good = ca.issue(directory, "alice", "alice", eku=CLIENT, emails=("alice@example.org",),
                        dns=("alice.clients.example.org",), ou=("finance",))
        spiffe = ca.issue(directory, "billing", "billing-svc", eku=CLIENT,
                          uris=("spiffe://example.org/ns/acme/sa/billing",))
        expired = ca.issue(directory, "expired", "old-alice", eku=CLIENT, emails=("old@example.org",),
                           not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=1))
        untrusted = other.issue(directory, "untrusted", "mallory", eku=CLIENT, emails=("mallory@example.org",))
        wrong_eku = ca.issue(directory, "wrong-eku", "server-only", eku=SERVER, dns=("svc.example.org",))
        no_eku = ca.issue(directory, "no-eku", "no-eku", emails=("noeku@example.org",))
        revoked = ca.issue(directory, "revoked", "revoked-bob", eku=CLIENT, emails=("bob@example.org",))
        crl_path = ca.write_crl(directory / "client-ca.crl.pem", [revoked])
        return cls(directory, ca, other, server, good, spiffe, expired, untrusted, wrong_eku, no_eku,
                   revoked, crl_path)
