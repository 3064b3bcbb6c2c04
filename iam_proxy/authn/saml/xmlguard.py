"""Checks a SAML message's XML before pysaml2 sees it, so that the element whose signature pysaml2
verifies is the only element the identity can come from.

Refused here, each with its own reason code:
  - anything that is not a small base64 XML document (`saml_message_malformed`, `saml_message_too_large`);
  - a DOCTYPE, entity declaration or external reference (`saml_xml_doctype`): no DTD is ever parsed;
  - comments or processing instructions (`saml_xml_comment`): exclusive canonicalization drops them, so
    `<NameID>admin<!---->.evil.org</NameID>` keeps a valid signature (the CVE-2017-11427 family);
  - any shape but one `Response` root holding exactly one plaintext `Assertion` as a direct child,
    or duplicate `ID` attributes (`saml_structure_invalid`): the signature-wrapping variants all need a
    second assertion, a moved one, or a second element with the signed ID;
  - a missing enveloped signature whose reference points at the assertion (or response)
    (`saml_assertion_unsigned`, `saml_response_unsigned`);
  - SHA-1 or MD5 signatures or digests (`saml_signature_algorithm_refused`).
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from ...core.errors import InvalidCredential

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"

MAX_MESSAGE_BYTES = 256 * 1024


def refuse(reason: str, message: str = "The SAML message was refused.", detail: str | None = None) -> InvalidCredential:
    return InvalidCredential(reason, message=message, detail=detail)


def decode_post_message(value: str) -> bytes:
    """The XML of an HTTP-POST binding message (base64, no deflate)."""
    if len(value) > MAX_MESSAGE_BYTES * 4 // 3 + 8:
        raise refuse("saml_message_too_large")
    try:
        xml = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise refuse("saml_message_malformed", detail="not base64") from None
    if len(xml) > MAX_MESSAGE_BYTES:
        raise refuse("saml_message_too_large")
    return xml


def parse_strict(xml: bytes) -> ET.Element:
    """Parse without DTDs, entities or external references, keeping comments so they can be refused."""
    parser = DefusedXMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True),
                              forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(xml)
        root = parser.close()
    except DefusedXmlException as exc:
        raise refuse("saml_xml_doctype", detail=type(exc).__name__) from None
    except ET.ParseError as exc:
        raise refuse("saml_message_malformed", detail=f"not well-formed XML: {exc}") from None
    for node in root.iter():
        if node.tag is ET.Comment or node.tag is ET.ProcessingInstruction:
            raise refuse("saml_xml_comment")
    return root


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _signature_references(element: ET.Element) -> list[str]:
    """Reference URIs of the enveloped signatures that are direct children of `element`."""
    uris = []
    for signature in element.findall(_q(DS, "Signature")):
        for ref in signature.iter(_q(DS, "Reference")):
            uris.append(ref.get("URI", ""))
    return uris


def _signs(element: ET.Element) -> bool:
    refs = _signature_references(element)
    return len(refs) == 1 and refs[0] == f"#{element.get('ID')}" and bool(element.get("ID"))


# SHA-1 (and MD5) signatures and digests are refused, whatever the IdP's metadata says.
SIGNATURE_METHODS = frozenset({
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512", "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384", "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
})
DIGEST_METHODS = frozenset({
    "http://www.w3.org/2001/04/xmlenc#sha256", "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
})


def _strong_algorithms(root: ET.Element) -> None:
    for method in root.iter(_q(DS, "SignatureMethod")):
        if method.get("Algorithm") not in SIGNATURE_METHODS:
            raise refuse("saml_signature_algorithm_refused", detail=f"SignatureMethod {method.get('Algorithm')}")
    for method in root.iter(_q(DS, "DigestMethod")):
        if method.get("Algorithm") not in DIGEST_METHODS:
            raise refuse("saml_signature_algorithm_refused", detail=f"DigestMethod {method.get('Algorithm')}")


def _unique_ids(root: ET.Element) -> None:
    seen: set[str] = set()
    for node in root.iter():
        if not isinstance(node.tag, str):
            continue
        for name, value in node.attrib.items():
            if name in ("ID", "Id", "id"):
                if value in seen:
                    raise refuse("saml_structure_invalid", detail=f"duplicate ID {value!r}")
                seen.add(value)


@dataclass(frozen=True)
class ResponseShape:
    """What the guard read from the one assertion. The SP checks these values for precise reason
    codes before pysaml2 verifies the signature and checks them again; pysaml2's result is then
    cross-checked against the assertion ID and NameID read here."""

    response_id: str
    assertion_id: str
    name_id: str | None
    in_response_to: str | None
    response_signed: bool
    assertion_signed: bool
    status: str | None
    destination: str | None
    issuers: tuple[str, ...]  # the response's (if any) and the assertion's
    audiences: tuple[str, ...]
    not_before: str | None
    not_on_or_after: str | None
    # Bearer SubjectConfirmationData: (Recipient, NotOnOrAfter, InResponseTo)
    confirmations: tuple[tuple[str | None, str | None, str | None], ...]


def inspect_response(xml: bytes, *, want_assertions_signed: bool, want_response_signed: bool) -> ResponseShape:
    root = parse_strict(xml)
    if root.tag != _q(SAMLP, "Response"):
        raise refuse("saml_structure_invalid", detail=f"root is {root.tag}")
    _unique_ids(root)
    if list(root.iter(_q(SAML, "EncryptedAssertion"))):
        raise refuse("saml_assertion_encrypted", message="Encrypted assertions are not accepted.")
    everywhere = list(root.iter(_q(SAML, "Assertion")))
    direct = root.findall(_q(SAML, "Assertion"))
    if len(everywhere) != 1 or len(direct) != 1:
        raise refuse("saml_structure_invalid", detail=f"{len(everywhere)} assertions, {len(direct)} direct")
    assertion = direct[0]
    # A Signature anywhere but directly under the Response or the Assertion has no business here.
    signatures = list(root.iter(_q(DS, "Signature")))
    placed = root.findall(_q(DS, "Signature")) + assertion.findall(_q(DS, "Signature"))
    if len(signatures) != len(placed):
        raise refuse("saml_structure_invalid", detail="signature in an unexpected place")
    response_signed = _signs(root)
    assertion_signed = _signs(assertion)
    if root.findall(_q(DS, "Signature")) and not response_signed:
        raise refuse("saml_structure_invalid", detail="response signature does not reference the response")
    if assertion.findall(_q(DS, "Signature")) and not assertion_signed:
        raise refuse("saml_structure_invalid", detail="assertion signature does not reference the assertion")
    _strong_algorithms(root)
    if want_assertions_signed and not assertion_signed:
        raise refuse("saml_assertion_unsigned", message="The SAML assertion is not signed.")
    if want_response_signed and not response_signed:
        raise refuse("saml_response_unsigned", message="The SAML response is not signed.")
    name_ids = list(assertion.iter(_q(SAML, "NameID")))
    name_id = None
    if name_ids:
        if len(name_ids) != 1 or len(name_ids[0]) != 0:
            raise refuse("saml_structure_invalid", detail="NameID must be a single text node")
        name_id = (name_ids[0].text or "").strip()
    status_code = root.find(f"{_q(SAMLP, 'Status')}/{_q(SAMLP, 'StatusCode')}")
    issuers = [e.text.strip() for e in (root.find(_q(SAML, "Issuer")), assertion.find(_q(SAML, "Issuer")))
               if e is not None and e.text]
    conditions = assertion.find(_q(SAML, "Conditions"))
    audiences = [(a.text or "").strip() for a in assertion.iter(_q(SAML, "Audience"))]
    confirmations = []
    for confirmation in assertion.iter(_q(SAML, "SubjectConfirmation")):
        if confirmation.get("Method") != "urn:oasis:names:tc:SAML:2.0:cm:bearer":
            continue
        data = confirmation.find(_q(SAML, "SubjectConfirmationData"))
        if data is not None:
            confirmations.append((data.get("Recipient"), data.get("NotOnOrAfter"), data.get("InResponseTo")))
        else:
            confirmations.append((None, None, None))
    return ResponseShape(
        response_id=root.get("ID", ""),
        assertion_id=assertion.get("ID", ""),
        name_id=name_id,
        in_response_to=root.get("InResponseTo"),
        response_signed=response_signed,
        assertion_signed=assertion_signed,
        status=status_code.get("Value") if status_code is not None else None,
        destination=root.get("Destination"),
        issuers=tuple(issuers),
        audiences=tuple(audiences),
        not_before=conditions.get("NotBefore") if conditions is not None else None,
        not_on_or_after=conditions.get("NotOnOrAfter") if conditions is not None else None,
        confirmations=tuple(confirmations),
    )


def inspect_logout_message(xml: bytes) -> ET.Element:
    """A LogoutRequest or LogoutResponse: no DTD, no comments, a known root."""
    root = parse_strict(xml)
    if root.tag not in (_q(SAMLP, "LogoutRequest"), _q(SAMLP, "LogoutResponse")):
        raise refuse("saml_structure_invalid", detail=f"root is {root.tag}")
    _unique_ids(root)
    _strong_algorithms(root)
    return root


def post_message_signed(root: ET.Element) -> bool:
    return _signs(root)


def _pysaml2_reason(exc: Exception) -> str:
    """A reason code for a pysaml2 refusal (the checks above usually refuse first, more precisely)."""
    name = type(exc).__name__
    text = str(exc).lower()
    if name in ("SignatureError", "SigverError", "IncorrectlySigned", "MissingKey", "CertificateError"):
        return "saml_signature_invalid"
    if name == "UnsolicitedResponse":
        return "saml_unsolicited"
    if name == "ToEarly":
        return "saml_not_yet_valid"
    if name in ("ResponseLifetimeExceed", "TooOld") or "too old" in text or "expired" in text:
        return "saml_expired"
    if "audience" in text or "not for me" in text:
        return "saml_audience_mismatch"
    if "destination" in text or "return address" in text:
        return "saml_destination_mismatch"
    if "signature" in text or "signed" in text:
        return "saml_signature_invalid"
    return "saml_response_invalid"


def pysaml2_refusal(exc: Exception) -> InvalidCredential:
    """A pysaml2 failure as the refusal the client gets (the class and a bounded message go to the log)."""
    return refuse(_pysaml2_reason(exc), detail=f"{type(exc).__name__}: {str(exc)[:200]}")
