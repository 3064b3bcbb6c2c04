"""HTTP-Redirect binding messages (SAML Bindings 3.4): the query signature and DEFLATE decoding.

The signature covers `SAMLRequest=...&RelayState=...&SigAlg=...` exactly as the sender encoded it,
so it is checked over the raw query string; re-encoding the decoded values (what pysaml2 does) fails
against IdPs that percent-encode differently. SHA-1 signatures are refused.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from urllib.parse import unquote_plus

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .xmlguard import MAX_MESSAGE_BYTES, refuse

_ALGORITHMS = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": hashes.SHA512,
}


def _raw_params(raw_query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if name in params:
            raise refuse("saml_message_malformed", detail=f"repeated query parameter {name}")
        params[name] = value
    return params


def inflate(encoded: str) -> bytes:
    try:
        deflated = base64.b64decode(encoded, validate=False)
        inflater = zlib.decompressobj(-15)
        xml = inflater.decompress(deflated, MAX_MESSAGE_BYTES + 1)
    except (binascii.Error, ValueError, zlib.error):
        raise refuse("saml_message_malformed", detail="not base64 DEFLATE") from None
    if len(xml) > MAX_MESSAGE_BYTES or inflater.unconsumed_tail:
        raise refuse("saml_message_too_large")
    return xml


def _public_key(pem_or_b64: str):
    text = pem_or_b64.strip()
    if "BEGIN CERTIFICATE" not in text:
        text = "-----BEGIN CERTIFICATE-----\n" + text + "\n-----END CERTIFICATE-----\n"
    return x509.load_pem_x509_certificate(text.encode()).public_key()


def verify_redirect_query(raw_query: str, kind: str, certs: list[str]) -> bytes:
    """The inflated XML of `kind` (SAMLRequest or SAMLResponse) once its signature verifies."""
    if len(raw_query) > MAX_MESSAGE_BYTES * 2:
        raise refuse("saml_message_too_large")
    params = _raw_params(raw_query)
    if kind not in params:
        raise refuse("saml_message_malformed", detail=f"no {kind}")
    if "Signature" not in params or "SigAlg" not in params:
        raise refuse("saml_logout_unsigned", message="The logout message is not signed.")
    sigalg = unquote_plus(params["SigAlg"])
    algorithm = _ALGORITHMS.get(sigalg)
    if algorithm is None:
        raise refuse("saml_signature_algorithm_refused", detail=f"SigAlg {sigalg}")
    signed = "&".join(f"{name}={params[name]}" for name in (kind, "RelayState", "SigAlg") if name in params)
    try:
        signature = base64.b64decode(unquote_plus(params["Signature"]), validate=False)
    except (binascii.Error, ValueError):
        raise refuse("saml_message_malformed", detail="signature not base64") from None
    for cert in certs:
        key = _public_key(cert)
        try:
            if isinstance(key, rsa.RSAPublicKey) and "#rsa-" in sigalg:
                key.verify(signature, signed.encode("ascii"), padding.PKCS1v15(), algorithm())
            elif isinstance(key, ec.EllipticCurvePublicKey) and "#ecdsa-" in sigalg:
                key.verify(signature, signed.encode("ascii"), ec.ECDSA(algorithm()))
            else:
                continue
        except InvalidSignature:
            continue
        return inflate(unquote_plus(params[kind]))
    raise refuse("saml_signature_invalid", message="The SAML message's signature is not valid.")
