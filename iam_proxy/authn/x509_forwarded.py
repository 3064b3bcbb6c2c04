"""Client certificates a trusted front proxy forwards: Envoy's X-Forwarded-Client-Cert and nginx's
`$ssl_client_escaped_cert` header, parsed into certificate chains (authn/x509.py verifies them)."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..core.errors import InvalidCredential

XFCC_HEADER = "x-forwarded-client-cert"
NGINX_HEADER = "ssl-client-cert"
MAX_HEADER_BYTES = 64 * 1024
MAX_CHAIN = 8


def malformed_header(message: str) -> InvalidCredential:
    return InvalidCredential("certificate_header_malformed", message="The forwarded client certificate is malformed.",
                             detail=message)


def parse_xfcc(value: str) -> list[dict[str, list[str]]]:
    """Envoy's X-Forwarded-Client-Cert: elements split by `,`, `key=value` pairs split by `;`,
    values optionally double-quoted with `\\"` escapes. Keys are lower-cased; raises ValueError."""
    elements: list[dict[str, list[str]]] = []
    pairs: dict[str, list[str]] = {}
    key: str | None = None
    buf: list[str] = []
    i, n = 0, len(value)
    quoted_value = False

    def finish_pair() -> None:
        nonlocal key, quoted_value
        text = "".join(buf)
        if key is None:
            if text.strip() or quoted_value:
                raise ValueError("a pair without '='")
        else:
            name = key.strip().lower()
            if not re.fullmatch(r"[a-z]+", name):
                raise ValueError(f"bad key {name!r}")
            pairs.setdefault(name, []).append(text if quoted_value else text.strip())
        buf.clear()
        key, quoted_value = None, False

    while i < n:
        ch = value[i]
        if ch == '"':
            if key is None or "".join(buf).strip():
                raise ValueError("a quote in the wrong place")
            buf.clear()
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quote")
                ch = value[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(value[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    i += 1
                    break
                buf.append(ch)
                i += 1
            quoted_value = True
            rest = value[i:].lstrip(" ")
            if rest and rest[0] not in ";,":
                raise ValueError("text after a quoted value")
            i = n - len(rest)
            continue
        if ch == "=" and key is None:
            key = "".join(buf)
            buf.clear()
        elif ch == ";":
            finish_pair()
        elif ch == ",":
            finish_pair()
            if not pairs:
                raise ValueError("an empty element")
            elements.append(pairs)
            pairs = {}
        else:
            if quoted_value:
                raise ValueError("text after a quoted value")
            buf.append(ch)
        i += 1
    finish_pair()
    if not pairs:
        raise ValueError("an empty element")
    elements.append(pairs)
    return elements


def _load_pem_chain(text: str) -> list[x509.Certificate]:
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError("no PEM certificate")
    # nginx's older $ssl_client_cert indents continuation lines with a tab
    text = "\n".join(line.strip() for line in text.splitlines())
    certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    if not certs or len(certs) > MAX_CHAIN:
        raise ValueError("no certificates, or too many")
    return certs


def der_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def chain_from_xfcc(value: str) -> list[x509.Certificate]:
    try:
        element = parse_xfcc(value)[-1]
    except ValueError as exc:
        raise malformed_header(f"xfcc: {exc}") from None
    cert_values = element.get("cert", [])
    if len(cert_values) != 1:
        raise malformed_header("xfcc: the element needs exactly one Cert= (set_current_client_cert_details.cert)")
    try:
        leaf = _load_pem_chain(unquote(cert_values[0]))[0]
        chain = _load_pem_chain(unquote(element["chain"][0])) if element.get("chain") else [leaf]
    except (ValueError, UnicodeError) as exc:
        raise malformed_header(f"xfcc: {exc}") from None
    if chain[0] != leaf:
        chain = [leaf, *chain]
    hashes = element.get("hash", [])
    if hashes and hashes[0].lower() != der_sha256(leaf):
        raise malformed_header("xfcc: Hash does not match Cert")
    return chain


def chain_from_nginx(value: str) -> list[x509.Certificate]:
    try:
        return _load_pem_chain(unquote(value))
    except (ValueError, UnicodeError) as exc:
        raise malformed_header(f"ssl-client-cert: {exc}") from None
