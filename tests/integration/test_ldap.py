"""The LDAP authenticator and enricher against a real slapd (LDAPS and StartTLS, CA verified)."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading

import pytest

from iam_proxy.core.identity import Identity
from iam_proxy.authn.ldap_basic import PUBLIC_REASON, LdapBasicAuthenticator
from iam_proxy.context import context_from_scope
from iam_proxy.directory.ldap import DirectoryUnavailable, LdapDirectoryClient, LookupFailed
from iam_proxy.enrich.ldap_groups import LdapGroupEnricher
from iam_proxy.core.errors import AuthUnavailable, InvalidCredential
from iam_proxy.settings.directory import LdapAuthenticatorSettings, LdapDirectory
from iam_proxy.settings.enrich import LdapEnricherSettings
from peers.slapd import SERVICE_DN, SERVICE_PASSWORD, SUFFIX
from support import free_port

GROUPS = f"ou=groups,{SUFFIX}"


def directory_settings(slapd, url: str | None = None, **overrides) -> LdapDirectory:
    values = {
        "id": "corp", "urls": [url or slapd.ldaps_url], "ca_file": slapd.ca_file,
        "tls_server_name": "localhost", "bind_dn": SERVICE_DN, "bind_password": SERVICE_PASSWORD,
        "user_base_dn": SUFFIX, "connect_timeout_seconds": 1, "timeout_seconds": 1, "deadline_seconds": 3,
        "groups": {"sources": ["member_of", "member", "member_uid"], "base_dn": GROUPS, "nested": "walk"},
    }
    values.update(overrides)
    return LdapDirectory.model_validate(values)


@pytest.fixture
async def directory(slapd):
    client = LdapDirectoryClient(directory_settings(slapd))
    yield client
    await client.close()


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


def request(headers: dict[str, str]):
    return context_from_scope({"type": "http", "method": "GET", "path": "/api/x", "query_string": b"",
                               "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                               "client": ("127.0.0.1", 5000)})


def authenticator(client: LdapDirectoryClient, **settings) -> LdapBasicAuthenticator:
    return LdapBasicAuthenticator("corp-basic", LdapAuthenticatorSettings(type="ldap", directory="corp", **settings),
                                  client)


class BlackHole:
    """Accepts TCP connections and never answers: a hung directory server."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


# ---------------------------------------------------------------- logins and groups


@pytest.mark.parametrize("scheme", ["ldaps", "starttls"])
async def test_login_over_ldaps_and_starttls_yields_identity_with_all_group_kinds(slapd, scheme):
    url = slapd.ldaps_url if scheme == "ldaps" else slapd.ldap_url
    client = LdapDirectoryClient(directory_settings(slapd, url))
    try:
        identity = await authenticator(client).authenticate(request(basic("alice", "alice-secret")))
    finally:
        await client.close()
    assert identity.method == "ldap"
    assert (identity.sub, identity.username, identity.email, identity.name) == (
        "alice", "alice", "alice@example.org", "Alice Anders")
    # finance: memberOf and groupOfNames/member; developers: posixGroup/memberUid;
    # staff and all-staff: nested one and two levels above finance (walked by the client)
    assert identity.groups == ("all-staff", "developers", "finance", "staff")
    assert identity.attributes["dn"] == f"uid=alice,ou=people,{SUFFIX}"
    assert identity.provider == "corp" and identity.amr == ("pwd",)


async def test_group_sources_are_separately_selectable(slapd):
    only_member_of = directory_settings(slapd, groups={"sources": ["member_of"]})
    posix_only = directory_settings(slapd, groups={"sources": ["member_uid"], "base_dn": GROUPS})
    as_dns = directory_settings(slapd, groups={"sources": ["member_of"], "name": "dn"})
    found = {}
    for name, settings in (("member_of", only_member_of), ("posix", posix_only), ("dn", as_dns)):
        client = LdapDirectoryClient(settings)
        try:
            found[name] = (await client.verify_password("alice", "alice-secret")).groups
        finally:
            await client.close()
    assert found["member_of"] == ("finance",)  # the memberof overlay lists direct groups only
    assert found["posix"] == ("developers",)
    assert found["dn"] == (f"cn=finance,{GROUPS}",)


async def test_nested_group_cycle_ends(directory):
    carol = await directory.verify_password("carol", "carol-secret")
    assert carol.groups == ("admins", "loop-a", "loop-b")


async def test_user_without_groups(directory):
    assert (await directory.verify_password("bob", "bob-secret")).groups == ()


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("username,password,detail", [
    ("alice", "wrong", "bind_refused"),
    ("nobody", "whatever", "user_not_found"),
    ("dup", "dup-secret", "user_ambiguous"),  # two entries match: never pick the first
])
async def test_bad_credentials_are_401_with_one_public_reason(directory, username, password, detail):
    with pytest.raises(InvalidCredential) as caught:
        await authenticator(directory).authenticate(request(basic(username, password)))
    assert caught.value.reason == PUBLIC_REASON
    assert caught.value.detail == detail


@pytest.mark.parametrize("password", ["", "   ", "\t", "alice-secret\x00", "\x00"])
async def test_empty_blank_and_nul_passwords_are_refused_before_any_bind(slapd, password):
    # The directory points at a server that never answers: reaching it would be a 503, not a 401.
    hole = BlackHole()
    client = LdapDirectoryClient(directory_settings(slapd, f"ldaps://127.0.0.1:{hole.port}"))
    try:
        with pytest.raises(InvalidCredential) as caught:
            await authenticator(client).authenticate(request(basic("alice", password)))
        assert caught.value.detail == "password_empty"
        assert hole.held == []
    finally:
        await client.close()
        hole.close()


@pytest.mark.parametrize("username", [
    "*", "al*", "*)(uid=*", "alice)(uid=*", "*)(|(uid=*", "alice)(|(objectClass=*)", "alice\\2a", "(uid=alice)",
])
async def test_filter_injection_never_matches_alice(directory, username):
    # Without RFC 4515 escaping, every one of these would find alice and her password would bind.
    with pytest.raises(InvalidCredential) as caught:
        await authenticator(directory).authenticate(request(basic(username, "alice-secret")))
    assert caught.value.detail == "user_not_found"


async def test_referral_entry_is_not_followed(slapd, directory):
    before = slapd.referral_trap.connections
    with pytest.raises(InvalidCredential) as caught:
        await authenticator(directory).authenticate(request(basic("mallory", "mallory-secret")))
    assert caught.value.detail == "user_not_found"
    await asyncio.sleep(0.1)
    assert slapd.referral_trap.connections == before


@pytest.mark.parametrize("header", ["Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(),
                                    "Basic " + base64.b64encode(b":password").decode(),
                                    "Basic " + base64.b64encode(b"\xff\xfe:x").decode()])
async def test_malformed_basic_header_is_401(directory, header):
    with pytest.raises(InvalidCredential) as caught:
        await authenticator(directory).authenticate(request({"authorization": header}))
    assert caught.value.reason == "basic_malformed"


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer abc.def.ghi"}, {"x-api-key": "k"}])
async def test_other_credentials_are_not_mine(directory, headers):
    assert await authenticator(directory).authenticate(request(headers)) is None


async def test_control_characters_in_username_are_refused(directory):
    with pytest.raises(InvalidCredential):
        await authenticator(directory).authenticate(request(basic("ali\nce", "alice-secret")))


# ---------------------------------------------------------------- transport, availability, failover


@pytest.mark.parametrize("overrides", [
    {"tls_server_name": "ldap.elsewhere.example"},  # certificate is for localhost/127.0.0.1
    {"ca_file": None},  # the system trust store does not know the test CA
])
@pytest.mark.parametrize("scheme", ["ldaps", "starttls"])
async def test_unverifiable_server_certificate_is_503_not_cleartext(slapd, overrides, scheme):
    url = slapd.ldaps_url if scheme == "ldaps" else slapd.ldap_url
    client = LdapDirectoryClient(directory_settings(slapd, url, **overrides))
    try:
        with pytest.raises(AuthUnavailable) as caught:
            await authenticator(client).authenticate(request(basic("alice", "alice-secret")))
    finally:
        await client.close()
    assert caught.value.status == 503 and caught.value.reason == "ldap_unavailable"


async def test_ip_address_url_verifies_against_ip_san(slapd):
    client = LdapDirectoryClient(directory_settings(slapd, tls_server_name=None))
    try:
        assert (await client.verify_password("alice", "alice-secret")).username == "alice"
    finally:
        await client.close()


async def test_directory_down_is_503(slapd):
    client = LdapDirectoryClient(directory_settings(slapd, f"ldaps://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(AuthUnavailable):
            await authenticator(client).authenticate(request(basic("alice", "alice-secret")))
    finally:
        await client.close()


async def test_hung_server_is_bounded_and_loop_stays_responsive(slapd):
    hole = BlackHole()
    client = LdapDirectoryClient(directory_settings(slapd, f"ldap://127.0.0.1:{hole.port}",
                                                    timeout_seconds=1, deadline_seconds=5))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(DirectoryUnavailable):
            await client.verify_password("alice", "alice-secret")
    finally:
        task.cancel()
        await client.close()
        hole.close()
    assert ticks > 3  # the event loop kept running while ldap3 waited in its worker thread


async def test_failover_to_the_next_server(slapd):
    dead = f"ldaps://127.0.0.1:{free_port()}"
    client = LdapDirectoryClient(directory_settings(slapd, urls=[dead, slapd.ldaps_url]))
    try:
        assert (await client.verify_password("alice", "alice-secret")).username == "alice"
        # the dead server is now skipped without another connection attempt
        assert [slot.url for slot in client._candidates()] == [slapd.ldaps_url]
    finally:
        await client.close()


async def test_connections_dropped_under_the_pool_are_replaced(directory):
    await directory.verify_password("alice", "alice-secret")
    idle = list(directory._search_pool._idle.queue) + list(directory._bind_pool._idle.queue)
    assert idle
    for pooled in idle:  # as if the server had restarted or timed the idle connections out
        pooled.connection.socket.shutdown(socket.SHUT_RDWR)
    assert (await directory.verify_password("alice", "alice-secret")).groups
    assert [slot.down_until for slot in directory._slots] == [0.0]  # the server is not blamed


async def test_pool_bounds_concurrency_and_reuses_connections(slapd):
    client = LdapDirectoryClient(directory_settings(slapd, pool_size=2))
    try:
        users = await asyncio.gather(*(client.verify_password(u, f"{u}-secret")
                                       for u in ["alice", "bob", "carol"] * 4))
        assert [u.username for u in users] == ["alice", "bob", "carol"] * 4
        assert client._search_pool._idle.qsize() <= 2 and client._bind_pool._idle.qsize() <= 2
    finally:
        await client.close()


# ---------------------------------------------------------------- caches


class CountingDirectory:
    def __init__(self, inner: LdapDirectoryClient) -> None:
        self.inner, self.id, self.calls = inner, inner.id, 0

    async def verify_password(self, username: str, password: str):
        self.calls += 1
        return await self.inner.verify_password(username, password)


async def test_positive_and_negative_caches(directory):
    counting = CountingDirectory(directory)
    auth = LdapBasicAuthenticator("corp-basic", LdapAuthenticatorSettings(type="ldap", directory="corp"),
                                  counting)  # type: ignore[arg-type]
    first = await auth.authenticate(request(basic("alice", "alice-secret")))
    assert await auth.authenticate(request(basic("alice", "alice-secret"))) == first
    for _ in range(2):
        with pytest.raises(InvalidCredential):
            await auth.authenticate(request(basic("alice", "not-it")))
    assert counting.calls == 2  # one successful bind, one refused bind
    # a different password for the same user is a different cache entry
    with pytest.raises(InvalidCredential):
        await auth.authenticate(request(basic("alice", "alice-secret ")))
    assert counting.calls == 3


async def test_cache_can_be_disabled(directory):
    counting = CountingDirectory(directory)
    auth = LdapBasicAuthenticator("corp-basic", LdapAuthenticatorSettings(
        type="ldap", directory="corp", cache_ttl_seconds=0, negative_cache_ttl_seconds=0), counting)  # type: ignore[arg-type]
    for _ in range(2):
        await auth.authenticate(request(basic("bob", "bob-secret")))
    assert counting.calls == 2


# ---------------------------------------------------------------- the enricher


def directory_settings_from(client: LdapDirectoryClient, **overrides) -> LdapDirectory:
    return client.settings.model_copy(update=overrides)


def enricher(client: LdapDirectoryClient, **settings) -> LdapGroupEnricher:
    return LdapGroupEnricher("corp-groups", LdapEnricherSettings(type="ldap", directory="corp", **settings), client)


async def test_enricher_adds_groups_to_a_jwt_identity(directory):
    jwt_identity = Identity(sub="f3a1", method="jwt", username="alice", groups=("from-token",))
    enriched = await enricher(directory).enrich(jwt_identity, request({}))
    assert enriched.groups == ("from-token", "all-staff", "developers", "finance", "staff")
    assert enriched.email == "alice@example.org" and enriched.sub == "f3a1"
    assert enriched.attributes["ldap"]["dn"] == f"uid=alice,ou=people,{SUFFIX}"


async def test_enricher_by_certificate_subject_dn(directory):
    cert_identity = Identity(sub="spiffe://x", method="x509",
                             cert={"subject": f"UID=carol,OU=people,{SUFFIX.upper()}"})
    enriched = await enricher(directory, key="cert_subject", lookup="dn").enrich(cert_identity, request({}))
    assert enriched.groups == ("admins", "loop-a", "loop-b")


async def test_enricher_refuses_dn_outside_user_base(directory):
    group_as_subject = Identity(sub="x", method="x509", cert={"subject": f"cn=admins,{GROUPS}"})
    directory_narrow = LdapDirectoryClient(directory_settings_from(directory, user_base_dn=f"ou=people,{SUFFIX}"))
    try:
        with pytest.raises(InvalidCredential):
            await enricher(directory_narrow, key="cert_subject", lookup="dn").enrich(group_as_subject, request({}))
    finally:
        await directory_narrow.close()


async def test_enricher_custom_filter_with_injection_attempt(directory):
    by_mail = enricher(directory, key="email", filter="(&(objectClass=inetOrgPerson)(mail={value}))")
    alice = Identity(sub="a", method="jwt", email="alice@example.org")
    assert "finance" in (await by_mail.enrich(alice, request({}))).groups
    sneaky = Identity(sub="m", method="jwt", email="*")
    assert (await by_mail.enrich(sneaky, request({}))).groups == ()


async def test_enricher_unknown_user_passes_or_is_refused(directory):
    stranger = Identity(sub="s", method="jwt", username="stranger")
    assert await enricher(directory).enrich(stranger, request({})) == stranger
    with pytest.raises(InvalidCredential) as caught:
        await enricher(directory, require_entry=True).enrich(stranger, request({}))
    assert caught.value.reason == "user_not_in_directory"


async def test_enricher_skips_other_methods_and_anonymous(directory):
    key_identity = Identity(sub="alice", method="apikey", username="alice")
    assert await enricher(directory, methods=["jwt"]).enrich(key_identity, request({})) == key_identity
    anon = Identity(sub="anonymous", method="anonymous", username="alice")
    assert await enricher(directory).enrich(anon, request({})) == anon


async def test_enricher_fails_closed_when_directory_is_down(slapd):
    client = LdapDirectoryClient(directory_settings(slapd, f"ldaps://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(AuthUnavailable):
            await enricher(client).enrich(Identity(sub="a", method="jwt", username="alice"), request({}))
    finally:
        await client.close()


async def test_enricher_caches_lookups(directory):
    calls = 0
    real = directory.find_user

    async def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    directory.find_user = counting  # type: ignore[method-assign]
    e = enricher(directory)
    for name in ["alice", "alice", "stranger", "stranger"]:
        await e.enrich(Identity(sub=name, method="jwt", username=name), request({}))
    assert calls == 2


async def test_lookup_failed_carries_no_password(directory):
    with pytest.raises(LookupFailed) as caught:
        await directory.verify_password("alice", "s3cret-never-logged")
    assert "s3cret-never-logged" not in str(caught.value) + caught.value.detail
