"""Development keys and certificates for the quick start (`make certs`): never for production.

Writes, only where missing:
  dev-idp-key.pem, dev-jwks.json   the dev issuer's RS256 key, used by `iam-proxy token`
  assertion-key.pem                the proxy's ES256 key for X-Iam-Assertion
  ca.pem, ca-key.pem               a dev CA
  server.pem, server-key.pem       a server certificate for localhost and 127.0.0.1, from the dev CA
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc.jwk import RSAKey

DEV_ISSUER = "https://dev-idp.iam-proxy.localhost"
DEV_AUDIENCE = "iam-proxy"
DEV_KID = "dev-1"


def _write_private(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_private(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def jwks_for(key: rsa.RSAPrivateKey, kid: str) -> dict:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = RSAKey.import_key(pem).as_dict(private=False)
    return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}


def issue_cert(subject_cn: str, key, issuer_cert, issuer_key, *, ca: bool = False, days: int = 825,
               dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), eku=None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                        critical=True)
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_dev_certs(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    idp_key_path = directory / "dev-idp-key.pem"
    if not idp_key_path.exists():
        _write_private(idp_key_path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        made.append(idp_key_path.name)
    jwks_path = directory / "dev-jwks.json"
    if not jwks_path.exists() or idp_key_path.name in made:
        jwks_path.write_text(json.dumps(jwks_for(load_private(idp_key_path), DEV_KID), indent=2))
        made.append(jwks_path.name)
    assertion_path = directory / "assertion-key.pem"
    if not assertion_path.exists():
        _write_private(assertion_path, ec.generate_private_key(ec.SECP256R1()))
        made.append(assertion_path.name)
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    if not ca_path.exists() or not ca_key_path.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = issue_cert("iam-proxy dev CA", ca_key, None, None, ca=True, days=3650)
        _write_private(ca_key_path, ca_key)
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        made += [ca_path.name, ca_key_path.name]
    server_path, server_key_path = directory / "server.pem", directory / "server-key.pem"
    if not server_path.exists() or ca_path.name in made:
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ca_key = load_private(ca_key_path)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue_cert("localhost", key, ca_cert, ca_key, dns=("localhost",), ips=("127.0.0.1",),
                          eku=[ExtendedKeyUsageOID.SERVER_AUTH])
        _write_private(server_key_path, key)
        server_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made += [server_path.name, server_key_path.name]
    return made


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0] if args else "certs")
    made = make_dev_certs(directory)
    print(f"dev certificates in {directory}/: " + (", ".join(made) + " created" if made else "up to date"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
