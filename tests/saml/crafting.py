"""Crafting attacks from a real IdP response, and checking that the proxy refuses them.

`Captured` holds one real response (captured by the browser before it reached the proxy) and the
browser's login-state cookie, so a variant differs from an acceptable response only by the tampering.
Variants that change signed content are re-signed with the IdP's key when the test holds it
(`Captured.idp_key`); the others need no key and run against any IdP, Keycloak included.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

import httpx
from idp_kit import assertion_of, b64, make_keypair, resign, unb64, without_signature
from saml_support import wait_event

from support import ProxyProcess

XSW_EVIL_NAME = "admin@example.org"


class Captured:
    def __init__(self, proxy: ProxyProcess, xml: str, login_cookie: tuple[str, str], idp_key: Path | None,
                 workdir: Path, idp_entity_id: str) -> None:
        self.proxy = proxy
        self.xml = xml
        self.login_cookie = login_cookie
        self.idp_key = idp_key
        self.workdir = workdir
        self.idp_entity_id = idp_entity_id

    def post(self, xml: str | None = None, raw: str | None = None, cookie: bool = True) -> httpx.Response:
        body = {"SAMLResponse": raw if raw is not None else b64(xml or self.xml), "RelayState": "sp"}
        cookies = {self.login_cookie[0]: self.login_cookie[1]} if cookie else {}
        with httpx.Client(base_url=self.proxy.url, cookies=cookies, timeout=20) as client:
            return client.post("/.iam/saml/acs", data=body, follow_redirects=False)

    def resign(self, xml: str, **kw) -> str:
        assert self.idp_key is not None, "re-signing needs the IdP's key"
        return resign(xml, self.idp_key, workdir=self.workdir, **kw)


def capture_login(page: Any, proxy: ProxyProcess, sign_in: Callable[[Any], None], rd: str) -> tuple[str, tuple[str, str]]:
    """Log in through the browser and stop the IdP's POST before it reaches the proxy's ACS: the real
    response XML and the browser's login-state cookie. `sign_in(page)` fills and submits the IdP's form."""
    posted: dict[str, str] = {}

    def intercept(route) -> None:
        posted["body"] = route.request.post_data
        route.fulfill(status=200, body="captured")

    page.route(f"{proxy.url}/.iam/saml/acs", intercept)
    page.goto(f"{proxy.url}/.iam/saml/login?rd={rd}")
    sign_in(page)
    page.wait_for_url(f"{proxy.url}/.iam/saml/acs")
    cookie = next(c for c in page.context.cookies() if c["name"] == "iam_saml_login")
    return unb64(parse_qs(posted["body"])["SAMLResponse"][0]), (cookie["name"], cookie["value"])


def sign_in_npm_idp(page) -> None:
    page.fill("#userName", "alice@example.org")
    page.click("#btn-sign-in")


def swap_name_id(xml: str, new: str = XSW_EVIL_NAME) -> str:
    out, count = re.subn(r"(<(?:[\w-]+:)?NameID\b[^>]*>)[^<]*(</)", rf"\g<1>{new}\2", xml)
    assert count == 1
    return out


def _evil_copy(xml: str, new_id: str | None = "_evil") -> str:
    evil = without_signature(assertion_of(xml), "assertion") if "Signature" in assertion_of(xml) else assertion_of(xml)
    evil = swap_name_id(evil)
    if new_id is not None:
        evil = re.sub(r'(<(?:[\w-]+:)?Assertion\b[^>]*?\bID=")[^"]*"', rf'\g<1>{new_id}"', evil, count=1)
    return evil


def _time(seconds_from_now: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_from_now))


# ------------------------------------------------------------------ the variants

def xsw_evil_assertion_before_signed(c: Captured) -> str:
    original = assertion_of(c.xml)
    return c.xml.replace(original, _evil_copy(c.xml) + original)


def xsw_signed_assertion_in_extensions(c: Captured) -> str:
    original = assertion_of(c.xml)
    prefix = re.search(r"<(\w+):Response\b", c.xml).group(1)
    wrapped = c.xml.replace(original, _evil_copy(c.xml))
    issuer_end = re.search(r"</(?:[\w-]+:)?Issuer>", wrapped).end()
    return wrapped[:issuer_end] + f"<{prefix}:Extensions>{original}</{prefix}:Extensions>" + wrapped[issuer_end:]


def xsw_signed_assertion_inside_evil(c: Captured) -> str:
    original = assertion_of(c.xml)
    evil = _evil_copy(c.xml)
    evil = re.sub(r"(</(?:[\w-]+:)?Subject>)", lambda m: m.group(1) + original, evil, count=1)
    return c.xml.replace(original, evil)


def xsw_evil_assertion_with_the_signed_id(c: Captured) -> str:
    original = assertion_of(c.xml)
    signed_id = re.search(r'<(?:[\w-]+:)?Assertion\b[^>]*?\bID="([^"]*)"', original).group(1)
    return c.xml.replace(original, _evil_copy(c.xml, new_id=signed_id) + original)


def tampered_name_id(c: Captured) -> str:
    return swap_name_id(c.xml)


def unsigned_assertion_in_signed_response(c: Captured) -> str:
    forged = swap_name_id(without_signature(c.xml, "assertion"))
    return c.resign(forged, assertion=False, response=True)


def comment_in_name_id(c: Captured) -> str:
    # Exclusive c14n drops comments: the signature still verifies over the original NameID text, and
    # a parser that stops at the comment reads "alice" out of "alice<!---->.evil.example".
    out, count = re.subn(r"(<(?:[\w-]+:)?NameID\b[^>]*>)([^<]*)(</)", r"\1\2<!---->.evil.example\3", c.xml)
    assert count == 1
    return out


def response_tampered_outside_assertion(c: Captured) -> str:
    # The assertion (and its signature) is untouched; only the Response's own signature breaks.
    out, count = re.subn(r'(<(?:[\w-]+:)?Response\b[^>]*?IssueInstant=")[^"]*"', r'\g<1>2001-01-01T00:00:00Z"',
                         c.xml, count=1)
    assert count == 1
    return out


def doctype_with_entities(c: Captured) -> str:
    dtd = '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    return dtd + re.sub(r"^<\?xml[^>]*\?>", "", c.xml)


def external_entity(c: Captured) -> str:
    dtd = '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    return dtd + re.sub(r"^<\?xml[^>]*\?>", "", re.sub(r"(<(?:[\w-]+:)?NameID\b[^>]*>)[^<]*", r"\1&x;", c.xml))


def other_audience(c: Captured) -> str:
    return c.resign(re.sub(r"(<(?:[\w-]+:)?Audience>)[^<]*", r"\1https://other-sp.example/metadata", c.xml))


def other_acs(c: Captured) -> str:
    acs = f"{c.proxy.url}/.iam/saml/acs"
    return c.resign(c.xml.replace(acs, "https://other-sp.example/saml/acs"))


def other_recipient(c: Captured) -> str:
    return c.resign(re.sub(r'Recipient="[^"]*"', 'Recipient="https://other-sp.example/saml/acs"', c.xml))


def expired(c: Captured) -> str:
    xml = re.sub(r'NotOnOrAfter="[^"]*"', f'NotOnOrAfter="{_time(-600)}"', c.xml)
    xml = re.sub(r'NotBefore="[^"]*"', f'NotBefore="{_time(-1200)}"', xml)
    return c.resign(xml)


def not_yet_valid(c: Captured) -> str:
    return c.resign(re.sub(r'NotBefore="[^"]*"', f'NotBefore="{_time(3600)}"', c.xml))


def unsolicited(c: Captured) -> str:
    return c.resign(re.sub(r'\sInResponseTo="[^"]*"', "", c.xml))


def answers_another_request(c: Captured) -> str:
    return c.resign(re.sub(r'InResponseTo="[^"]*"', 'InResponseTo="id-someone-elses-request"', c.xml))


def other_issuer(c: Captured) -> str:
    return c.resign(c.xml.replace(f">{c.idp_entity_id}<", ">urn:test:another-idp<"))


def signed_by_another_key(c: Captured) -> str:
    key, cert = make_keypair(c.workdir, "attacker")
    pem = "".join(cert.read_text().splitlines()[1:-1])
    forged = re.sub(r"(<(?:[\w-]+:)?X509Certificate>)[^<]*", rf"\g<1>{pem}", swap_name_id(c.xml))
    return resign(forged, key, workdir=c.workdir)


def signed_with_sha1(c: Captured) -> str:
    # A valid signature by the IdP's own key, but with RSA-SHA1 and SHA-1 digests.
    xml = c.xml.replace("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                        "http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    xml = xml.replace("http://www.w3.org/2001/04/xmlenc#sha256", "http://www.w3.org/2000/09/xmldsig#sha1")
    return c.resign(xml)


def status_not_success(c: Captured) -> str:
    return c.resign(c.xml.replace("urn:oasis:names:tc:SAML:2.0:status:Success",
                                  "urn:oasis:names:tc:SAML:2.0:status:Requester"))


VARIANTS: list[tuple[Callable[[Captured], str], str]] = [
    (xsw_evil_assertion_before_signed, "saml_structure_invalid"),
    (xsw_signed_assertion_in_extensions, "saml_structure_invalid"),
    (xsw_signed_assertion_inside_evil, "saml_structure_invalid"),
    (xsw_evil_assertion_with_the_signed_id, "saml_structure_invalid"),
    (tampered_name_id, "saml_signature_invalid"),
    (response_tampered_outside_assertion, "saml_signature_invalid"),
    (unsigned_assertion_in_signed_response, "saml_assertion_unsigned"),
    (comment_in_name_id, "saml_xml_comment"),
    (doctype_with_entities, "saml_xml_doctype"),
    (external_entity, "saml_xml_doctype"),
    (other_audience, "saml_audience_mismatch"),
    (other_acs, "saml_destination_mismatch"),
    (other_recipient, "saml_recipient_mismatch"),
    (expired, "saml_expired"),
    (not_yet_valid, "saml_not_yet_valid"),
    (unsolicited, "saml_unsolicited"),
    (answers_another_request, "saml_in_response_to_mismatch"),
    (other_issuer, "saml_issuer_mismatch"),
    (signed_by_another_key, "saml_signature_invalid"),
    (status_not_success, "saml_status_not_success"),
    (signed_with_sha1, "saml_signature_algorithm_refused"),
]


# Variants that need no key: they run against responses of IdPs whose key the test does not hold.
NO_KEY_VARIANTS = [(craft, reason) for craft, reason in VARIANTS
                   if craft.__name__ not in {"unsigned_assertion_in_signed_response", "other_audience", "other_acs",
                                             "other_recipient", "expired", "not_yet_valid", "unsolicited",
                                             "answers_another_request", "other_issuer", "status_not_success",
                                             "signed_with_sha1"}]


def assert_refused(c: Captured, response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["reason"] == reason
    assert not any("iam_session=" in v and "Max-Age=0" not in v for v in response.headers.get_list("set-cookie"))
    event = wait_event(c.proxy, lambda e: e["decision_id"] == body["error_id"])
    assert (event["outcome"], event["reason"], event["status"]) == ("denied", reason, 401)
    assert event["http"]["path"] == "/.iam/saml/acs"
    assert event["identity"] is None


