"""LDAP settings validation, the directory client's pure helpers, and the Active Directory specifics that
the slapd tests cannot reach (the in-chain filter, AD bind diagnostics), with the network faked."""

from __future__ import annotations

import pytest

from iam_proxy.directory.ldap import DirectoryUnavailable, LdapDirectoryClient, LookupFailed
from iam_proxy.directory.names import dn_is_within, escape_filter_value, first_rdn_value, password_is_usable
from iam_proxy.core.errors import ConfigError
from iam_proxy.settings import parse_settings
from iam_proxy.settings.directory import LdapDirectory


def config(directory: dict | None = None, **top) -> dict:
    base_directory = {"id": "corp", "urls": ["ldaps://ldap.example.org"], "user_base_dn": "dc=example,dc=org"}
    raw = {
        "directories": [{**base_directory, **(directory or {})}],
        "authenticators": {"basic": {"type": "ldap", "directory": "corp"}},
        "routes": [{"id": "r", "upstream": "http://127.0.0.1:1", "authenticators": ["basic"]}],
    }
    raw.update(top)
    return raw


def error(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw)
    return str(caught.value)


def test_a_minimal_directory_is_valid():
    settings = parse_settings(config())
    directory = settings.directories[0]
    assert directory.start_tls and directory.groups.sources == ["member_of"]


@pytest.mark.parametrize("url", ["ldap://ldap.example.org", "ldap://10.0.0.5:389"])
def test_cleartext_is_refused_off_loopback(url):
    message = error(config({"urls": [url], "start_tls": False, "allow_cleartext_on_loopback": True}))
    assert message.startswith("directories[0]") and "in clear" in message


def test_cleartext_needs_the_explicit_loopback_flag():
    assert "in clear" in error(config({"urls": ["ldap://127.0.0.1:3389"], "start_tls": False}))
    settings = parse_settings(config({"urls": ["ldap://127.0.0.1:3389"], "start_tls": False,
                                      "allow_cleartext_on_loopback": True}))
    assert settings.directories[0].allow_cleartext_on_loopback


@pytest.mark.parametrize("directory,fragment", [
    ({"urls": ["http://ldap.example.org"]}, "urls"),
    ({"urls": []}, "urls"),
    ({"user_filter": "(uid=alice)"}, "user_filter"),
    ({"user_filter": "uid={username}"}, "user_filter"),
    ({"bind_dn": "cn=reader,dc=example,dc=org"}, "bind_password"),
    ({"groups": {"sources": ["member"]}}, "base_dn"),
    ({"groups": {"nested": "walk"}}, "base_dn"),
    ({"groups": {"nested": "ad_in_chain"}}, "base_dn"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_directory_settings_name_the_key(directory, fragment):
    message = error(config(directory))
    assert message.startswith("directories[0]") and fragment in message


def test_unknown_directory_references_name_the_key():
    raw = config()
    raw["authenticators"]["basic"]["directory"] = "elsewhere"
    assert error(raw).startswith("authenticators.basic.directory: unknown directory 'elsewhere'")
    raw = config(enrichers={"groups": {"type": "ldap", "directory": "nope"}})
    assert error(raw).startswith("enrichers.groups.directory: unknown directory 'nope'")


def test_unknown_enricher_on_a_route_names_the_key():
    raw = config()
    raw["routes"][0]["enrichers"] = ["missing"]
    assert error(raw).startswith("routes[0].enrichers[0]: unknown enricher 'missing'")


def test_enricher_filter_needs_value_placeholder():
    raw = config(enrichers={"groups": {"type": "ldap", "directory": "corp", "filter": "(uid=x)"}})
    assert "enrichers.groups.filter" in error(raw)


def test_bind_password_never_prints():
    settings = parse_settings(config({"bind_dn": "cn=reader,dc=example,dc=org", "bind_password": "hunter2-secret"}))
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings.directories[0])


@pytest.mark.parametrize("value,escaped", [
    ("alice", "alice"), ("*", "\\2a"), ("a(b)c", "a\\28b\\29c"), ("back\\slash", "back\\5cslash"),
    ("nul\x00", "nul\\00"), ("*)(uid=*))(|(uid=*", "\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a"),
    ("Jürgen", "Jürgen"),
])
def test_filter_values_are_escaped_per_rfc4515(value, escaped):
    assert escape_filter_value(value) == escaped


@pytest.mark.parametrize("password,usable", [
    ("", False), (" ", False), ("\t\n", False), ("pw\x00", False), ("\x00", False), ("pw", True), (" pw ", True),
])
def test_unauthenticated_bind_passwords_are_unusable(password, usable):
    assert password_is_usable(password) is usable


def test_group_names_from_dns():
    assert first_rdn_value("cn=finance,ou=groups,dc=example,dc=org") == "finance"
    assert first_rdn_value("CN=Finance\\, EMEA,OU=Groups,DC=corp,DC=example") == "Finance, EMEA"
    assert first_rdn_value("cn=\\23hash,dc=x") == "#hash"


def test_dn_containment_is_by_rdn_not_by_string():
    base = "ou=people,dc=example,dc=org"
    assert dn_is_within("UID=alice, OU=People,DC=example,DC=org", base)
    assert not dn_is_within("uid=alice,ou=evilpeople,dc=example,dc=org", base)
    assert not dn_is_within("cn=admins,ou=groups,dc=example,dc=org", base)
    assert not dn_is_within("not a dn", base)


# ---------------------------------------------------------------- Active Directory specifics (no AD here)


def ad_client(**groups) -> LdapDirectoryClient:
    return LdapDirectoryClient(LdapDirectory(
        id="ad", urls=["ldaps://dc1.corp.example.com"], user_base_dn="DC=corp,DC=example,DC=com",
        user_filter="(&(objectClass=user)(sAMAccountName={username}))", username_attribute="sAMAccountName",
        groups={"sources": ["member_of"], "base_dn": "DC=corp,DC=example,DC=com", **groups}))


def test_ad_in_chain_asks_for_every_enclosing_group_in_one_search():
    client = ad_client(nested="ad_in_chain")
    sent: list[str] = []

    def search_groups(search_filter: str) -> list[str]:
        sent.append(search_filter)
        return ["CN=All Staff,OU=Groups,DC=corp,DC=example,DC=com"]

    client._search_groups = search_groups  # type: ignore[method-assign]
    user_dn = "CN=Smith\\, Alice (HR),OU=Staff,DC=corp,DC=example,DC=com"
    groups = client._groups(user_dn, "asmith", {"memberOf": ["CN=HR,OU=Groups,DC=corp,DC=example,DC=com"]})
    # the DN's parentheses and backslash are escaped, so the DN cannot end the filter early
    assert sent == ["(&(objectClass=group)(member:1.2.840.113556.1.4.1941:="
                    "CN=Smith\\5c, Alice \\28HR\\29,OU=Staff,DC=corp,DC=example,DC=com))"]
    assert groups == ("All Staff", "HR")


@pytest.mark.parametrize("code,meaning", [("52e", "wrong password"), ("775", "account locked out"),
                                          ("533", "account disabled"), ("773", "password must be changed")])
def test_ad_bind_diagnostics_are_translated_for_the_log(code, meaning):
    client = ad_client()
    message = f"80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data {code}, v4563"
    client._with_connection = lambda pool, operation: (49, message)  # type: ignore[method-assign]
    with pytest.raises(LookupFailed) as caught:
        client._bind_as("CN=Alice,OU=Staff,DC=corp,DC=example,DC=com", "pw")
    assert caught.value.reason == "bind_refused" and meaning in caught.value.detail


def test_server_side_bind_errors_are_unavailability_not_bad_passwords():
    client = ad_client()
    client._with_connection = lambda pool, operation: (51, "busy")  # type: ignore[method-assign]
    with pytest.raises(DirectoryUnavailable):
        client._bind_as("CN=Alice,OU=Staff,DC=corp,DC=example,DC=com", "pw")
