"""The SP core without a proxy process: Single Logout messages, IdP metadata signatures and refresh,
IdP-initiated SSO, attribute presets, the replay caches (memory and a real redis-server), the return
address rules, and settings errors.

Messages come from an in-process pysaml2 IdP, which holds its key so that tests can sign what a real
IdP would; the proxy-level tests use the saml-idp npm server and Keycloak.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from idp_kit import PysamlIdP, b64, make_keypair
from saml2 import BINDING_HTTP_REDIRECT
from saml2.saml import NAMEID_FORMAT_UNSPECIFIED, NameID

from iam_proxy.audit.auditor import Auditor
from iam_proxy.settings.audit import AuditSettings
from iam_proxy.authn.saml.metadata import sp_metadata
from iam_proxy.portal.saml import SAMLPortal
from iam_proxy.authn.saml.presets import PRESETS, mapping_for
from iam_proxy.authn.saml.replay import MemoryReplayCache, RedisReplayCache
from iam_proxy.authn.saml.attributes import map_identity
from iam_proxy.authn.saml.sp import ServiceProvider
from iam_proxy.core.errors import AuthUnavailable, ConfigError, InvalidCredential
from iam_proxy.session import build_session_manager
from iam_proxy.settings import parse_settings
from iam_proxy.settings.saml import SAMLAttributeMapping, SAMLAuthenticatorSettings
from iam_proxy.settings.sessions import SessionSettings
from support import Process, free_port, wait_for_port

SP_BASE = "https://proxy.test.invalid"


class Pair:
    """An SP under test and the pysaml2 IdP that trusts it."""

    def __init__(self, tmp: Path, **overrides) -> None:
        self.tmp = tmp
        self.idp = PysamlIdP(tmp / "idp")
        self.idp_metadata = tmp / "idp-metadata.xml"
        self.idp_metadata.write_bytes(self.idp.metadata_xml())
        key, cert = make_keypair(tmp / "sp", "sp")
        self.settings = SAMLAuthenticatorSettings.model_validate(
            {"type": "saml", "base_url": SP_BASE, "key_file": str(key), "cert_file": str(cert),
             "idp": {"file": str(self.idp_metadata)}, **overrides})
        self.idp.trust_sp(sp_metadata(self.settings))
        self.sp = ServiceProvider("saml", self.settings, MemoryReplayCache())

    async def ready(self) -> "Pair":
        assert await self.sp.refresh_metadata()
        return self

    async def login(self):
        url, request_id = await self.sp.authn_request("sp")
        return await self.sp.consume(b64(self.idp.response_xml(url)), request_id)

    def idp_redirect(self, message, kind: str, relay_state: str = "", sigalg: str | None = None) -> str:
        """The query string of a signed HTTP-Redirect message from the IdP."""
        server = self.idp.server
        info = server.apply_binding(BINDING_HTTP_REDIRECT, str(message), f"{SP_BASE}/.iam/saml/slo", relay_state,
                                    response=kind == "SAMLResponse", sign=True,
                                    sigalg=sigalg or "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
        return urlsplit(dict(info["headers"])["Location"]).query


def run(coro):
    """Run a coroutine on its own loop in a worker thread: Playwright's sync API (used by other test
    modules of the session) keeps an event loop marked running on the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# ------------------------------------------------------------------ login at the SP level

def test_sp_initiated_login_maps_the_identity(tmp_path):
    async def go():
        pair = await Pair(tmp_path).ready()
        result = await pair.login()
        return pair, result

    pair, result = run(go())
    identity = result.identity
    assert (identity.sub, identity.method, identity.iss, identity.provider) == \
        ("alice", "saml", pair.idp.entity_id, "saml")
    assert identity.email == "alice@example.org" and identity.groups == ("finance", "staff")
    assert result.session_index and identity.acr.endswith(":Password")


def test_the_authn_request_is_signed_with_sha256_over_redirect(tmp_path):
    async def go():
        pair = await Pair(tmp_path).ready()
        return await pair.sp.authn_request("sp")

    url, _ = run(go())
    query = parse_qs(urlsplit(url).query)
    assert query["SigAlg"] == ["http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"]
    assert query["Signature"] and query["SAMLRequest"]


def test_idp_initiated_sso_is_refused_unless_enabled(tmp_path):
    async def go(allow: bool):
        pair = await Pair(tmp_path / str(allow), allow_idp_initiated=allow).ready()
        xml = pair.idp.response_xml(None, unsolicited_acs=f"{SP_BASE}/.iam/saml/acs")
        return await pair.sp.consume(b64(xml), None)

    with pytest.raises(InvalidCredential) as refused:
        run(go(False))
    assert refused.value.reason == "saml_unsolicited"
    assert run(go(True)).identity.sub == "alice"


def test_response_signed_only_is_refused_when_assertions_must_be_signed(tmp_path):
    async def go():
        pair = await Pair(tmp_path).ready()
        url, request_id = await pair.sp.authn_request("sp")
        xml = pair.idp.response_xml(url, sign_assertion=False, sign_response=True)
        return await pair.sp.consume(b64(xml), request_id)

    with pytest.raises(InvalidCredential) as refused:
        run(go())
    assert refused.value.reason == "saml_assertion_unsigned"


# ------------------------------------------------------------------ single logout

def test_idp_initiated_logout_request_is_verified_and_answered(tmp_path):
    async def go():
        pair = await Pair(tmp_path).ready()
        result = await pair.login()
        _, request = pair.idp.server.create_logout_request(
            f"{SP_BASE}/.iam/saml/slo", pair.settings.sp_entity_id,
            name_id=NameID(text="alice", format=NAMEID_FORMAT_UNSPECIFIED),
            session_indexes=[result.session_index], sign=False)
        query = pair.idp_redirect(request, "SAMLRequest", relay_state="rs")
        handled = await pair.sp.handle_logout_request(query, None)
        # the same message with one byte of the signed query changed
        tampered = query.replace("RelayState=rs", "RelayState=rx")
        with pytest.raises(InvalidCredential) as bad:
            await pair.sp.handle_logout_request(tampered, None)
        unsigned = "&".join(p for p in query.split("&") if not p.startswith(("Signature=", "SigAlg=")))
        with pytest.raises(InvalidCredential) as missing:
            await pair.sp.handle_logout_request(unsigned, None)
        sha1 = pair.idp_redirect(request, "SAMLRequest", sigalg="http://www.w3.org/2000/09/xmldsig#rsa-sha1")
        with pytest.raises(InvalidCredential) as weak:
            await pair.sp.handle_logout_request(sha1, None)
        return result, handled, bad.value, missing.value, weak.value

    result, handled, bad, missing, weak = run(go())
    assert handled.name_id == "alice" and handled.session_indexes == (result.session_index,)
    answer = parse_qs(urlsplit(handled.response_url).query)
    assert handled.response_url.startswith("https://idp.test.invalid/slo?") and answer["Signature"]
    assert (bad.reason, missing.reason, weak.reason) == \
        ("saml_signature_invalid", "saml_logout_unsigned", "saml_signature_algorithm_refused")


def test_logout_response_must_answer_our_request(tmp_path):
    async def go():
        pair = await Pair(tmp_path).ready()
        result = await pair.login()
        url, request_id = await pair.sp.logout_request(result.name_id, result.name_id_format,
                                                       result.session_index, "sp")
        query = parse_qs(urlsplit(url).query)
        request = pair.idp.server.parse_logout_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT).message
        response = pair.idp.server.create_logout_response(request, [BINDING_HTTP_REDIRECT], sign=False)
        answer = pair.idp_redirect(response, "SAMLResponse")
        await pair.sp.verify_logout_response(answer, None, request_id)
        with pytest.raises(InvalidCredential) as other:
            await pair.sp.verify_logout_response(answer, None, "id-another-request")
        return other.value

    assert run(go()).reason == "saml_in_response_to_mismatch"


# ------------------------------------------------------------------ IdP metadata

def _signed_metadata(pair: Pair, key: Path, cert: Path) -> bytes:
    """The IdP's metadata with an enveloped signature by `key` (xmlsec1, as a federation signs it)."""
    xml = pair.idp.metadata_xml().decode()
    xml = xml.replace('entityID=', 'ID="md1" entityID=', 1)
    template = ('<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
                '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
                '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
                '<ds:Reference URI="#md1"><ds:Transforms>'
                '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
                '<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>'
                '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/>'
                '</ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature>')
    close = xml.index(">", xml.index("EntityDescriptor")) + 1
    xml = xml[:close] + template + xml[close:]
    path = pair.tmp / "unsigned-md.xml"
    path.write_text(xml)
    out = subprocess.run(["xmlsec1", "--sign", "--privkey-pem", str(key), "--id-attr:ID",
                          "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor", str(path)],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_signed_metadata_is_verified_and_tampering_refused(tmp_path):
    pair = Pair(tmp_path)
    fed_key, fed_cert = make_keypair(tmp_path / "federation", "federation")
    signed = _signed_metadata(pair, fed_key, fed_cert)

    def sp_with(metadata: bytes, cert: Path) -> ServiceProvider:
        path = tmp_path / f"md-{len(list(tmp_path.iterdir()))}.xml"
        path.write_bytes(metadata)
        settings = pair.settings.model_copy(update={"idp": pair.settings.idp.model_copy(
            update={"file": path, "signing_cert_file": cert})})
        return ServiceProvider("saml", settings, MemoryReplayCache())

    other_key, other_cert = make_keypair(tmp_path / "other", "other")
    tampered = signed.replace(b"https://idp.test.invalid/sso", b"https://evil.example/sso")
    unsigned = pair.idp.metadata_xml()

    async def go():
        return [await sp_with(signed, fed_cert).refresh_metadata(),
                await sp_with(tampered, fed_cert).refresh_metadata(),
                await sp_with(signed, other_cert).refresh_metadata(),
                await sp_with(unsigned, fed_cert).refresh_metadata()]

    assert run(go()) == [True, False, False, False]


def test_a_failed_refresh_keeps_the_last_good_metadata(tmp_path):
    async def go():
        pair = await Pair(tmp_path).ready()
        pair.idp_metadata.write_text('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>')
        refreshed = await pair.sp.refresh_metadata()
        return refreshed, pair.sp.ready, await pair.login()

    refreshed, ready, result = run(go())
    assert refreshed is False and ready and result.identity.sub == "alice"


def test_a_refresh_picks_up_the_idps_new_signing_key(tmp_path):
    async def go():
        pair = await Pair(tmp_path).ready()
        rolled = PysamlIdP(tmp_path / "idp-rolled", key_name="idp-rolled")
        rolled.trust_sp(sp_metadata(pair.settings))
        url, request_id = await pair.sp.authn_request("sp")
        with pytest.raises(InvalidCredential) as before:
            await pair.sp.consume(b64(rolled.response_xml(url)), request_id)
        pair.idp_metadata.write_bytes(rolled.metadata_xml())
        assert await pair.sp.refresh_metadata()
        url, request_id = await pair.sp.authn_request("sp")
        after = await pair.sp.consume(b64(rolled.response_xml(url)), request_id)
        return before.value, after

    before, after = run(go())
    assert before.reason == "saml_signature_invalid" and after.identity.sub == "alice"


def test_no_metadata_means_503_not_anonymous(tmp_path):
    async def go():
        pair = Pair(tmp_path)
        pair.idp_metadata.write_text("not xml")
        assert not await pair.sp.refresh_metadata()
        await pair.sp.authn_request("sp")

    with pytest.raises(AuthUnavailable) as unavailable:
        run(go())
    assert (unavailable.value.status, unavailable.value.reason) == (503, "saml_metadata_unavailable")


# ------------------------------------------------------------------ attribute presets

MS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
MS2008 = "http://schemas.microsoft.com/ws/2008/06/identity/claims/"


@pytest.mark.parametrize("preset,attributes,expected", [
    ("entra", {MS + "name": ["alice@contoso.com"], MS + "emailaddress": ["alice@contoso.com"],
               "http://schemas.microsoft.com/identity/claims/displayname": ["Alice A"],
               MS2008 + "groups": ["0f1e-group-id"], MS2008 + "role": ["Invoices.Read"],
               "http://schemas.microsoft.com/identity/claims/tenantid": ["tenant-1"],
               "http://schemas.microsoft.com/identity/claims/objectidentifier": ["oid-1"]},
     {"username": "alice@contoso.com", "email": "alice@contoso.com", "name": "Alice A",
      "groups": ("0f1e-group-id",), "roles": ("Invoices.Read",), "tenant": "tenant-1"}),
    ("adfs", {MS + "upn": ["alice@corp.example"], MS + "emailaddress": ["alice@corp.example"],
              MS2008 + "groups": ["Finance"], MS2008 + "role": ["Approver"]},
     {"username": "alice@corp.example", "groups": ("Finance",), "roles": ("Approver",)}),
    ("okta", {"email": ["alice@okta.example"], "groups": ["Everyone", "Finance"]},
     {"email": "alice@okta.example", "groups": ("Everyone", "Finance")}),
    ("shibboleth", {"urn:oid:1.3.6.1.4.1.5923.1.1.1.6": ["alice@uni.example"],
                    "urn:oid:0.9.2342.19200300.100.1.3": ["alice@uni.example"],
                    "urn:oid:1.3.6.1.4.1.5923.1.1.1.9": ["staff@uni.example", "member@uni.example"],
                    "urn:oid:1.3.6.1.4.1.5923.1.1.1.7": ["urn:mace:uni.example:finance"],
                    "urn:oid:1.3.6.1.4.1.25178.1.2.9": ["uni.example"]},
     {"username": "alice@uni.example", "groups": ("staff@uni.example", "member@uni.example"),
      "roles": ("urn:mace:uni.example:finance",), "tenant": "uni.example"}),
    ("keycloak", {"username": ["alice"], "email": ["alice@example.org"], "groups": ["finance"],
                  "Role": ["employee"]},
     {"username": "alice", "groups": ("finance",), "roles": ("employee",)}),
])
def test_presets_map_their_idps_attributes(preset, attributes, expected):
    identity = map_identity(attributes, PRESETS[preset], name_id="nid-1", issuer="https://idp", provider="saml")
    assert identity.sub == "nid-1" and identity.method == "saml"
    for field, value in expected.items():
        assert getattr(identity, field) == value, field
    if preset == "entra":
        assert identity.attributes["object_id"] == "oid-1"


def test_a_mapping_override_replaces_only_the_lists_it_sets():
    mapping = mapping_for("okta", SAMLAttributeMapping(groups=["memberOf"], sub=["employeeNumber"]))
    assert mapping.groups == ["memberOf"] and mapping.email == PRESETS["okta"].email
    identity = map_identity({"employeeNumber": ["E42"], "memberOf": ["g1"]}, mapping, name_id="n",
                            issuer="i", provider="p")
    assert (identity.sub, identity.groups) == ("E42", ("g1",))


# ------------------------------------------------------------------ replay caches

@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    tmp = tmp_path_factory.mktemp("saml-redis")
    proc = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(tmp)], tmp / "redis.log")
    wait_for_port(port, proc.proc)
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


def test_redis_replay_cache_is_shared_and_expires(redis_server):
    async def go():
        replica_a, replica_b = RedisReplayCache(redis_server), RedisReplayCache(redis_server)
        try:
            soon = time.time() + 1
            first = await replica_a.first_use("idp|_a1", soon)
            again = await replica_b.first_use("idp|_a1", soon)
            await asyncio.sleep(2.1)
            after_expiry = await replica_b.first_use("idp|_a1", time.time() + 60)
            return first, again, after_expiry
        finally:
            await replica_a.close()
            await replica_b.close()

    assert run(go()) == (True, False, True)


def test_unreachable_redis_refuses_with_503():
    async def go():
        cache = RedisReplayCache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
        try:
            await cache.first_use("idp|_x", time.time() + 60)
        finally:
            await cache.close()

    with pytest.raises(AuthUnavailable) as unavailable:
        run(go())
    assert (unavailable.value.status, unavailable.value.reason) == (503, "saml_replay_cache_unavailable")


def test_a_full_memory_cache_refuses_rather_than_forgets():
    async def go():
        cache = MemoryReplayCache(max_entries=2)
        now = time.time()
        assert await cache.first_use("a", now + 60) and await cache.first_use("b", now + 60)
        await cache.first_use("c", now + 60)

    with pytest.raises(AuthUnavailable) as full:
        run(go())
    assert full.value.reason == "saml_replay_cache_full"


# ------------------------------------------------------------------ the session authenticator

def test_the_session_ends_at_the_idps_session_not_on_or_after():
    from iam_proxy.core.identity import Identity
    from iam_proxy.authn.saml.authenticator import SAMLSessionAuthenticator
    from iam_proxy.context import context_from_scope

    sessions = build_session_manager(SessionSettings(secret="x" * 40, cookie_name="s", secure=False))
    now = time.time()

    async def go(expires_at, provider="saml", protocol="saml"):
        identity = Identity(sub="alice", method="saml", expires_at=expires_at)
        _, cookie = await sessions.create(identity=identity, provider=provider, protocol=protocol)
        scope = {"type": "http", "method": "GET", "path": "/app/x", "raw_path": b"/app/x", "query_string": b"",
                 "headers": [(b"host", b"proxy"), (b"cookie", cookie.split(";")[0].encode())]}
        found = await SAMLSessionAuthenticator("saml", sessions).authenticate(context_from_scope(scope))
        return found.sub if found else None

    assert run(go(None)) == "alice"
    assert run(go(int(now) + 600)) == "alice"
    assert run(go(int(now) - 1)) is None
    assert run(go(None, protocol="oidc")) is None  # another login's session is "not mine"
    assert run(go(None, provider="other_saml")) is None


# ------------------------------------------------------------------ return address and settings

@pytest.mark.parametrize("value,expected", [
    ("/app/reports?year=2026", "/app/reports?year=2026"),
    ("https://evil.example/app/", "/"),
    ("//evil.example/app/", "/"),
    ("/\\evil.example", "/"),
    ("/app/\r\nSet-Cookie: x=1", "/"),
    ("/not-a-route", "/"),
    (None, "/"),
])
def test_return_address_is_limited_to_the_proxys_routes(tmp_path, value, expected):
    pair = Pair(tmp_path)
    sessions = build_session_manager(SessionSettings(secret="x" * 40, cookie_name="s", secure=False))
    portal = SAMLPortal(pair.sp, sessions, is_served_path=lambda host, path: path.startswith("/app/"),
                        auditor=Auditor(AuditSettings(sinks=[])), secure_cookies=False, sp_metadata=b"")
    assert portal.safe_return_path("proxy.test.invalid", value) == expected


def _config(saml: dict, **top) -> dict:
    return {"authenticators": {"sso": {"type": "saml", "base_url": "https://proxy.example", "key_file": "k.pem",
                                       "cert_file": "c.pem", **saml}},
            "routes": [{"id": "r", "upstream": "http://127.0.0.1:1", "authenticators": ["sso"]}],
            "sessions": {"secret": "x" * 40}, **top}


@pytest.mark.parametrize("saml,top,message", [
    ({"idp": {"file": "a.xml", "url": "https://idp.example/md"}}, {}, "authenticators.sso.idp: "
     "set exactly one of file, url"),
    ({"idp": {"url": "http://idp.example/md"}}, {}, "authenticators.sso.idp: url: plain http metadata needs "
     "signing_cert_file"),
    ({"idp": {"file": "a.xml"}, "want_assertions_signed": False}, {}, "authenticators.sso: "
     "want_assertions_signed: at least one"),
    ({"idp": {"file": "a.xml"}, "base_url": "https://proxy.example/sub"}, {}, "authenticators.sso.base_url"),
    ({"idp": {"file": "a.xml"}}, {"sessions": {}}, "sessions.secret: authenticator 'sso' (saml) needs"),
    ({"idp": {"file": "a.xml"}, "replay_cache": {"store": "redis"}}, {},
     "authenticators.sso.replay_cache.store: 'redis' needs sessions.redis.url"),
    ({"idp": {"file": "a.xml"}, "signature_algorithm": "rsa-sha1"}, {}, "authenticators.sso.signature_algorithm"),
])
def test_settings_errors_name_the_key(saml, top, message):
    with pytest.raises(ConfigError) as error:
        parse_settings(_config(saml, **top))
    assert str(error.value).startswith(message), str(error.value)


def test_sp_metadata_publishes_the_endpoints_and_no_secret(tmp_path):
    pair = Pair(tmp_path)
    xml = sp_metadata(pair.settings).decode()
    assert f'entityID="{SP_BASE}/.iam/saml/metadata"' in xml
    assert f"{SP_BASE}/.iam/saml/acs" in xml and f"{SP_BASE}/.iam/saml/slo" in xml
    assert "PRIVATE" not in xml
    assert re.findall(r".{60}(?:sha1|md5).{20}", xml) == []  # weak algorithms are not advertised
