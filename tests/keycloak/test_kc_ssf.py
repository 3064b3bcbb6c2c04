"""Keycloak as the Shared Signals transmitter of the real proxy (Keycloak 26.7's experimental `ssf`
feature; the session Keycloak runs with it). The proxy sets up its own stream through Keycloak's
management API (`manage_stream`), and a sign-out in Keycloak reaches it as a signed CAEP
session-revoked SET, pushed (RFC 8935) or polled (RFC 8936): the user's earlier tokens are then
refused with `subject_revoked`.

What Keycloak 26.7 sends, and what the receiver needs (docs/signals.md, whose `signals-keycloak`
configuration these proxies run with this Keycloak's addresses):
  - session-revoked for a sign-out (LOGOUT, with a complex subject naming the user and Keycloak's
    session) and for an administrator's "sign out all sessions" (session id `ALL`); credential-change
    for a password reset or a credential added or removed. Nothing else: no RISC events, so disabling
    a user sends no signal.
  - the SETs' `aud` is `<client id>/<stream id>` unless the receiver client's `ssf.streamAudience`
    names it, which is how the proxy's fixed `audience` is met.
  - the receiver authenticates to the management and poll endpoints with an access token of its
    client (service account, scopes ssf.read and ssf.manage); the proxy's `bearer_token` is that token.
  - one stream per receiver client, and a push URL only if `ssf.validPushUrls` lists it.
"""

from __future__ import annotations

import ssl
import time
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml

from kc_support import ADMIN_PASSWORD
from snippets import snippet
from support import free_port, wait_until

REALM = "iam-ssf"
RECEIVER = "iam-proxy-ssf"
RECEIVER_SECRET = "iam-proxy-ssf-test-secret"
AUDIENCE = "iam-proxy-signals"
PUSH_AUTH = "Bearer kc-push-test-secret"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
POLICY = 'package ssf\n\nimport rego.v1\n\ndecision := {"allowed": true, "reasons": ["signed in"]}\n'


class Realm:
    """The realm's admin API, and the receiver's side of Keycloak's SSF API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.issuer = f"{base_url}/realms/{REALM}"
        self.admin_url = f"{base_url}/admin/realms/{REALM}"
        self.streams_url = f"{self.issuer}/ssf/transmitter/streams"

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        token = httpx.post(f"{self.base_url}/realms/master/protocol/openid-connect/token", timeout=20, data={
            "grant_type": "password", "client_id": "admin-cli", "username": "admin",
            "password": ADMIN_PASSWORD}).json()["access_token"]
        response = httpx.request(method, f"{self.admin_url}{path}", headers={"Authorization": f"Bearer {token}"},
                                 timeout=20, **kw)
        response.raise_for_status()
        return response

    def receiver_token(self) -> str:
        r = httpx.post(f"{self.issuer}/protocol/openid-connect/token", timeout=20, data={
            "grant_type": "client_credentials", "client_id": RECEIVER, "client_secret": RECEIVER_SECRET})
        r.raise_for_status()
        return r.json()["access_token"]

    def streams(self) -> list[dict[str, Any]]:
        r = httpx.get(self.streams_url, headers={"Authorization": f"Bearer {self.receiver_token()}"}, timeout=20)
        r.raise_for_status()
        return r.json()

    def delete_streams(self) -> None:
        for stream in self.streams():
            httpx.delete(self.streams_url, params={"stream_id": stream["stream_id"]}, timeout=20,
                         headers={"Authorization": f"Bearer {self.receiver_token()}"}).raise_for_status()

    def allow_push_to(self, url: str) -> None:
        cid = self.client_id(RECEIVER)
        client = self.admin("GET", f"/clients/{cid}").json()
        client["attributes"]["ssf.validPushUrls"] = url
        self.admin("PUT", f"/clients/{cid}", json=client)

    def client_id(self, client_id: str) -> str:
        return self.admin("GET", "/clients", params={"clientId": client_id}).json()[0]["id"]

    def user_id(self, username: str) -> str:
        return self.admin("GET", "/users", params={"username": username, "exact": "true"}).json()[0]["id"]

    def tokens(self, username: str) -> dict[str, Any]:
        r = httpx.post(f"{self.issuer}/protocol/openid-connect/token", timeout=20, data={
            "grant_type": "password", "client_id": "iam-proxy", "client_secret": "iam-proxy-test-secret",
            "username": username, "password": f"{username}-password", "scope": "openid"})
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def realm(keycloak) -> Iterator[Realm]:
    """A realm whose transmitter is on, two users, the proxy's client and its receiver client."""
    realm = Realm(keycloak.base_url)
    users = [{"username": name, "enabled": True, "email": f"{name}@example.org", "emailVerified": True,
              "firstName": name.title(), "lastName": "Test",
              "credentials": [{"type": "password", "value": f"{name}-password", "temporary": False}]}
             for name in ("alice", "bob")]
    audience_mapper = {"name": "audience", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
                       "config": {"included.client.audience": "iam-proxy", "access.token.claim": "true"}}
    clients = [
        {"clientId": "iam-proxy", "secret": "iam-proxy-test-secret", "publicClient": False,
         "standardFlowEnabled": False, "directAccessGrantsEnabled": True, "protocolMappers": [audience_mapper]},
        {"clientId": RECEIVER, "secret": RECEIVER_SECRET, "publicClient": False, "standardFlowEnabled": False,
         "serviceAccountsEnabled": True,
         "attributes": {"ssf.enabled": "true", "ssf.streamAudience": AUDIENCE, "ssf.defaultSubjects": "ALL",
                        "access.token.lifespan": "3600"}},
    ]
    token = httpx.post(f"{keycloak.base_url}/realms/master/protocol/openid-connect/token", timeout=20, data={
        "grant_type": "password", "client_id": "admin-cli", "username": "admin",
        "password": ADMIN_PASSWORD}).json()["access_token"]
    admin = {"Authorization": f"Bearer {token}"}
    httpx.delete(f"{keycloak.base_url}/admin/realms/{REALM}", headers=admin, timeout=20)  # a reused Keycloak
    httpx.post(f"{keycloak.base_url}/admin/realms", headers=admin, timeout=60, json={
        "realm": REALM, "enabled": True, "attributes": {"ssf.transmitterEnabled": "true"},
        "users": users, "clients": clients}).raise_for_status()
    # the transmitter creates the ssf.read and ssf.manage scopes with the realm; the receiver gets them
    cid = realm.client_id(RECEIVER)
    scopes = {s["name"]: s["id"] for s in realm.admin("GET", "/client-scopes").json()}
    for name in ("ssf.read", "ssf.manage"):
        realm.admin("PUT", f"/clients/{cid}/default-client-scopes/{scopes[name]}")
    yield realm
    realm.admin("DELETE", "")


@pytest.fixture
def ssf_proxy(realm, dev_tls, upstream, proxy_factory, tmp_path) -> Callable[..., Any]:
    """Starts the proxy (TLS, so Keycloak pushes over https) receiving the realm's signals."""
    started: list[Any] = []

    def start(delivery: str) -> Any:
        realm.delete_streams()  # one stream per receiver client: each proxy sets up its own
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        realm.allow_push_to(f"{url}/.iam/ssf/events")
        policies = tmp_path / f"policies-{port}"
        policies.mkdir()
        (policies / "ssf.rego").write_text(POLICY)
        [documented] = yaml.safe_load(snippet("signals-keycloak").text)["signals"]["transmitters"]
        assert documented["audience"] == AUDIENCE and documented["manage_stream"] is True
        config = {
            "listeners": {"proxy": {"host": "127.0.0.1", "port": port,
                                    "tls": {"cert_file": str(dev_tls.cert_file), "key_file": str(dev_tls.key_file)}},
                          "admin": {"host": "127.0.0.1", "port": free_port()},
                          # Keycloak keeps its push connection open: do not wait out the default 20 s
                          "shutdown_grace_seconds": 1},
            "identity_providers": [{"id": "kc", "issuer": realm.issuer, "discovery": True,
                                    "audiences": ["iam-proxy"], "jwks_min_refetch_seconds": 0}],
            "authenticators": {"bearer": {"type": "jwt", "providers": ["kc"]}},
            "routes": [{"id": "api", "match": {"path": "/api/**"}, "upstream": upstream,
                        "authenticators": ["bearer"], "policy": {"path": "ssf/decision"}}],
            "policy": {"dir": str(policies), "reload_interval_seconds": 0},
            "audit": {"sinks": [{"type": "file", "path": str(tmp_path / f"audit-{port}.jsonl")}]},
            "signals": {"transmitters": [{
                **documented, "issuer": realm.issuer,
                "configuration_url": f"{realm.issuer}/.well-known/ssf-configuration", "delivery": delivery, "push_endpoint_url": f"{url}/.iam/ssf/events", "push_authorization": PUSH_AUTH,
                "bearer_token": realm.receiver_token(), "poll_interval_seconds": 0.5}]},
        }
        proxy = proxy_factory(config, name=f"ssf-proxy-{port}")
        proxy.https = url
        started.append(proxy)
        wait_until(lambda: "shared signals transmitter keycloak ready" in proxy.process.logs(), timeout=20.0,
                   what="the proxy to set up its stream at Keycloak")
        return proxy

    yield start
    realm.delete_streams()


def _get(proxy, dev_tls, token: str) -> httpx.Response:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(dev_tls.ca_file)), timeout=20) as client:
        return client.get(f"{proxy.https}/api/orders", headers={"Authorization": f"Bearer {token}"})


def _refused(proxy, dev_tls, token: str) -> httpx.Response:
    return wait_until(lambda: (r := _get(proxy, dev_tls, token)).status_code == 401 and r, timeout=20.0,
                      what="the proxy to refuse the token")


def _signals(proxy, event: str) -> list[dict[str, Any]]:
    return [e for e in proxy.audit_events() if e.get("kind") == "signal" and CAEP + event in e["signal"]["events"]]


def test_an_admin_signing_a_user_out_is_pushed_and_the_proxy_refuses_the_users_earlier_tokens(
        realm, ssf_proxy, dev_tls):
    proxy = ssf_proxy("push")
    stream = wait_until(realm.streams, timeout=20.0, what="the proxy's stream")[0]
    assert stream["delivery"] == {"method": "urn:ietf:rfc:8935", "endpoint_url": f"{proxy.https}/.iam/ssf/events",
                                  "authorization_header": PUSH_AUTH}  # Keycloak sends it with every push
    assert stream["aud"] == AUDIENCE or stream["aud"] == [AUDIENCE]
    # what Keycloak 26.7 can send of what the proxy asked for
    assert set(stream["events_delivered"]) == {CAEP + "session-revoked", CAEP + "credential-change"}

    alice, bob = realm.tokens("alice")["access_token"], realm.tokens("bob")["access_token"]
    assert _get(proxy, dev_tls, alice).status_code == 200
    assert _get(proxy, dev_tls, bob).status_code == 200

    realm.admin("POST", f"/users/{realm.user_id('alice')}/logout")  # "Sign out all sessions"

    assert _refused(proxy, dev_tls, alice).json()["reason"] == "subject_revoked"
    assert _get(proxy, dev_tls, bob).status_code == 200
    [signal] = _signals(proxy, "session-revoked")
    assert signal["outcome"] == "accepted" and signal["signal"]["delivery"] == "push"
    assert signal["signal"]["iss"] == realm.issuer and signal["signal"]["revoked"] == 1
    assert signal["identity"] == {"format": "iss_sub", "iss": realm.issuer, "sub": realm.user_id("alice")}
    time.sleep(1.1)  # iat has a one-second grain: the next token is issued after the event
    assert _get(proxy, dev_tls, realm.tokens("alice")["access_token"]).status_code == 200


def test_a_user_signing_out_is_polled_and_the_proxy_refuses_the_users_earlier_tokens(realm, ssf_proxy, dev_tls):
    proxy = ssf_proxy("poll")
    [stream] = realm.streams()
    assert stream["delivery"]["method"] == "urn:ietf:rfc:8936"  # Keycloak's poll endpoint, which the proxy uses

    tokens = realm.tokens("alice")
    assert _get(proxy, dev_tls, tokens["access_token"]).status_code == 200
    httpx.post(f"{realm.issuer}/protocol/openid-connect/logout", timeout=20, data={
        "client_id": "iam-proxy", "client_secret": "iam-proxy-test-secret",
        "refresh_token": tokens["refresh_token"]}).raise_for_status()

    assert _refused(proxy, dev_tls, tokens["access_token"]).json()["reason"] == "subject_revoked"
    [signal] = wait_until(lambda: _signals(proxy, "session-revoked"), timeout=20.0, what="the audit event")
    assert signal["outcome"] == "accepted" and signal["signal"]["delivery"] == "poll"
    assert signal["identity"]["sub"] == realm.user_id("alice")


def test_a_password_reset_is_a_credential_change_which_refreshes_and_revokes_nothing(realm, ssf_proxy, dev_tls):
    proxy = ssf_proxy("push")
    bob = realm.tokens("bob")["access_token"]
    assert _get(proxy, dev_tls, bob).status_code == 200

    realm.admin("PUT", f"/users/{realm.user_id('bob')}/reset-password",
                json={"type": "password", "value": "bob-password", "temporary": False})

    [signal] = wait_until(lambda: _signals(proxy, "credential-change"), timeout=20.0,
                          what="the credential-change SET")
    assert signal["outcome"] == "accepted"
    assert (signal["signal"]["refreshed"], signal["signal"]["revoked"]) == (1, 0)
    assert _get(proxy, dev_tls, bob).status_code == 200
