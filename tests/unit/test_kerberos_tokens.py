"""`Authorization: Negotiate` parsing and NTLM detection, without a KDC (the KDC tests are in
tests/integration/test_kerberos.py)."""

from __future__ import annotations

import base64

import pytest

from iam_proxy.authn.kerberos import KerberosAuthenticator, is_ntlm, negotiate_token
from iam_proxy.context import context_from_scope
from iam_proxy.core.errors import InvalidCredential
from iam_proxy.settings.authn import KerberosAuthenticatorSettings


def ctx(authorization: str | None):
    headers = [(b"host", b"api.example.org")]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    return context_from_scope({"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x",
                               "query_string": b"", "headers": headers, "client": ("10.0.0.1", 5000)})


def test_other_schemes_are_not_mine():
    assert negotiate_token(ctx(None), 1024) is None
    assert negotiate_token(ctx("Bearer abc"), 1024) is None
    assert negotiate_token(ctx("Basic YTpi"), 1024) is None


def test_token_is_decoded():
    assert negotiate_token(ctx("Negotiate " + base64.b64encode(b"\x60\x01x").decode()), 1024) == b"\x60\x01x"
    assert negotiate_token(ctx("negotiate " + base64.b64encode(b"abc").decode()), 1024) == b"abc"


@pytest.mark.parametrize("header, reason", [
    ("Negotiate", "negotiate_token_malformed"),
    ("Negotiate %%%", "negotiate_token_malformed"),
    ("Negotiate " + "A" * 2000, "negotiate_token_too_large"),
])
def test_bad_tokens(header, reason):
    with pytest.raises(InvalidCredential) as info:
        negotiate_token(ctx(header), 1024)
    assert info.value.reason == reason


def test_ntlm_detection():
    assert is_ntlm(b"NTLMSSP\x00\x01\x00\x00\x00")
    krb5_and_ntlm = (bytes.fromhex("06092a864886f712010202") + bytes.fromhex("060a2b06010401823702020a"))
    assert not is_ntlm(b"\x60\x30" + krb5_and_ntlm)  # Kerberos offered too: let GSSAPI pick Kerberos
    assert is_ntlm(b"\x60\x30" + bytes.fromhex("060a2b06010401823702020a"))


def test_identity_from_principal(tmp_path):
    settings = KerberosAuthenticatorSettings(type="kerberos", keytab=tmp_path / "k", realm_tenants={"EXAMPLE.ORG": "ex"})
    identity = KerberosAuthenticator("krb", settings)._identity("alice@EXAMPLE.ORG", 3600)
    assert (identity.sub, identity.username, identity.tenant, identity.method) == (
        "alice@EXAMPLE.ORG", "alice", "ex", "kerberos")
    assert identity.expires_at - identity.auth_time == 3600
    restricted = KerberosAuthenticator("krb", settings.model_copy(update={"realms": ["OTHER.ORG"]}))
    with pytest.raises(InvalidCredential) as info:
        restricted._identity("alice@EXAMPLE.ORG", None)
    assert info.value.reason == "realm_not_allowed"
