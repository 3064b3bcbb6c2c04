"""SAML test kit: key pairs, an in-process pysaml2 IdP (it holds its key, so tests can craft and
re-sign responses), and helpers to tamper with a real response's XML.

The pysaml2 IdP stands in only where crafting needs the IdP's key; the real-peer tests use the
saml-idp npm server and Keycloak, which share no code with pysaml2.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.authn_context import PASSWORD
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_UNSPECIFIED, NameID
from saml2.server import Server

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


_KEYPAIRS: dict[str, tuple[bytes, bytes]] = {}  # name -> (key PEM, cert PEM), made once per test process


def make_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed RSA 2048 key pair named `name` (the same name gives the same pair in one run)."""
    directory.mkdir(parents=True, exist_ok=True)
    if name not in _KEYPAIRS:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test-{name}")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
        _KEYPAIRS[name] = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()),
                           cert.public_bytes(serialization.Encoding.PEM))
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(_KEYPAIRS[name][0])
    cert_path.write_bytes(_KEYPAIRS[name][1])
    return key_path, cert_path


class PysamlIdP:
    """An IdP in this process, signing with rsa-sha256, for the SP under test."""

    def __init__(self, directory: Path, entity_id: str = "https://idp.test.invalid/metadata",
                 key_name: str = "idp") -> None:
        self.directory = directory
        self.entity_id = entity_id
        self.key_file, self.cert_file = make_keypair(directory, key_name)
        self.base = "https://idp.test.invalid"
        self.server: Server | None = None

    def _config(self, sp_metadata: Path | None) -> IdPConfig:
        conf = {
            "entityid": self.entity_id,
            "xmlsec_binary": shutil.which("xmlsec1") or "/usr/bin/xmlsec1",
            "key_file": str(self.key_file), "cert_file": str(self.cert_file),
            "accepted_time_diff": 60,
            "service": {"idp": {
                "endpoints": {
                    "single_sign_on_service": [(self.base + "/sso", BINDING_HTTP_REDIRECT)],
                    "single_logout_service": [(self.base + "/slo", BINDING_HTTP_REDIRECT)],
                },
                "name_id_format": [NAMEID_FORMAT_UNSPECIFIED],
                "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None,
                                       "name_form": NAME_FORMAT_URI}},
                "sign_response": True, "sign_assertion": True,
                "signing_algorithm": RSA_SHA256, "digest_algorithm": SHA256,
            }},
        }
        if sp_metadata is not None:
            conf["metadata"] = {"local": [str(sp_metadata)]}
        config = IdPConfig()
        config.load(conf)
        return config

    def metadata_xml(self) -> bytes:
        return create_metadata_string(None, config=self._config(None), valid=24)

    def trust_sp(self, sp_metadata_xml: bytes) -> None:
        path = self.directory / "sp-metadata.xml"
        path.write_bytes(sp_metadata_xml)
        self.server = Server(config=self._config(path))

    def response_xml(self, authn_request_url: str | None, *, name_id: str = "alice",
                     attributes: dict[str, list[str]] | None = None, sign_response: bool = True,
                     sign_assertion: bool = True, destination: str | None = None,
                     audience: str | None = None, unsolicited_acs: str | None = None,
                     session_index: str = "idx-1") -> str:
        """A Response (XML text) to the AuthnRequest in `authn_request_url`, or an unsolicited one."""
        assert self.server is not None, "call trust_sp first"
        if authn_request_url is not None:
            query = parse_qs(urlsplit(authn_request_url).query)
            request = self.server.parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT).message
            args = self.server.response_args(request)
        else:
            sp_entity = next(iter(self.server.metadata.service_providers()))
            args = {"destination": unsolicited_acs, "in_response_to": None, "sp_entity_id": sp_entity,
                    "binding": BINDING_HTTP_POST, "name_id_policy": None}
        if destination is not None:
            args["destination"] = destination
        if audience is not None:
            args["sp_entity_id"] = audience
        response = self.server.create_authn_response(
            attributes or {"email": ["alice@example.org"], "groups": ["finance", "staff"]},
            userid=name_id, name_id=NameID(format=NAMEID_FORMAT_UNSPECIFIED, text=name_id),
            authn={"class_ref": PASSWORD, "authn_auth": self.entity_id},
            sign_response=sign_response, sign_assertion=sign_assertion, session_not_on_or_after=None,
            **args)
        text = str(response)
        if session_index != "idx-1":
            text = re.sub(r'SessionIndex="[^"]*"', f'SessionIndex="{session_index}"', text)
        return text


def b64(xml: str | bytes) -> str:
    return base64.b64encode(xml.encode() if isinstance(xml, str) else xml).decode()


def unb64(value: str) -> str:
    return base64.b64decode(value).decode()


def name_id_of(xml: str) -> str:
    match = re.search(r"<(?:[\w-]+:)?NameID\b[^>]*>([^<]*)</", xml)
    assert match, "no NameID"
    return match.group(1)


# ---------------------------------------------------------------- crafting from a real response

_SIG_VALUES = re.compile(r"(<(?:[\w-]+:)?(DigestValue|SignatureValue)\b[^>]*>)[^<]*(</(?:[\w-]+:)?\2>)")


def resign(xml: str, key_file: Path, *, assertion: bool = True, response: bool = True, workdir: Path) -> str:
    """Re-sign a (modified) response with `key_file` using xmlsec1, as the IdP would have: the
    assertion's enveloped signature first, then the response's. Existing Signature elements are
    the templates; their KeyInfo stays as it is."""
    import subprocess

    xml = _SIG_VALUES.sub(r"\1\3", xml)
    targets = []
    if assertion:
        targets.append("//*[local-name()='Assertion']/*[local-name()='Signature']")
    if response:
        targets.append("/*[local-name()='Response']/*[local-name()='Signature']")
    path = workdir / "resign.xml"
    for xpath in targets:
        path.write_text(xml)
        out = subprocess.run(
            ["xmlsec1", "--sign", "--privkey-pem", str(key_file),
             "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
             "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response",
             "--node-xpath", xpath, str(path)], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"xmlsec1 --sign failed: {out.stderr[-800:]}")
        xml = out.stdout
    return xml


def without_signature(xml: str, of: str) -> str:
    """Drop the enveloped Signature of the Assertion (`of="assertion"`) or of the Response."""
    signatures = list(re.finditer(r"<(?:[\w-]+:)?Signature\b.*?</(?:[\w-]+:)?Signature>", xml, re.S))
    assertion_start = re.search(r"<(?:[\w-]+:)?Assertion\b", xml).start()
    for match in signatures:
        inside_assertion = match.start() > assertion_start
        if inside_assertion == (of == "assertion"):
            return xml[:match.start()] + xml[match.end():]
    raise AssertionError(f"no {of} signature")


def assertion_of(xml: str) -> str:
    match = re.search(r"<((?:[\w-]+:)?)Assertion\b.*?</\1Assertion>", xml, re.S)
    assert match, "no Assertion"
    return match.group(0)
