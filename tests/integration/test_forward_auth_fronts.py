"""Forward-auth behind a real nginx and a real Caddy, each configured with the snippet of
docs/deployment.md as written (only the three addresses are replaced), and iam-proxy with the
docs' `forward_auth` block. Clients write raw bytes to the front proxy from 127.0.0.5, so the
audit can tell the client from the front proxy (127.0.0.1); a recording upstream shows exactly
what reached the backend.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from peers.nginx import start_nginx
from rawhttp import RecordingUpstream, request_bytes, send_raw
from snippets import snippet
from support import (DevIssuer, Process, ProxyProcess, audit_event, base_config, copy_policies, free_port,
                     wait_for_port)

pytestmark = pytest.mark.peer("nginx")

CLIENT = "127.0.0.5"
# What authenticators set for the client (a refreshed session cookie, a Negotiate token), played by a policy
CLIENT_HEADERS_POLICY = """package fronttest

import rego.v1

decision := {"allowed": true, "response_headers_to_add": {
	"Set-Cookie": "__Host-iam_session=refreshed; Path=/; Secure; HttpOnly",
	"WWW-Authenticate": "Negotiate b2s=",
}}
"""
SPOOFED = [("X-Forwarded-User", "mallory"), ("X-Forwarded-Email", "mallory@evil"),
           ("X-Forwarded-Preferred-Username", "mallory"), ("X-Forwarded-Roles", "admin"),
           ("X-Remote-User", "mallory"), ("Remote-User", "mallory"), ("X_Forwarded_User", "mallory"),
           ("X-Iam-Assertion", "mallory")]


def as_written(text: str, front: int, iam: int, backend: int) -> str:
    """The docs' snippet with its three example addresses pointed at this test's processes."""
    for example in (":8000", "127.0.0.1:8080", "127.0.0.1:8081"):
        assert example in text, f"the snippet no longer uses {example}"
    return (text.replace("127.0.0.1:8000", f"127.0.0.1:{front}").replace(":8000 {", f":{front} {{")
            .replace("127.0.0.1:8080", f"127.0.0.1:{iam}").replace("127.0.0.1:8081", f"127.0.0.1:{backend}"))


@pytest.fixture(scope="module")
def recorder():
    upstream = RecordingUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def iam(recorder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fa-iam")
    issuer = DevIssuer(tmp / "issuer")
    policies = copy_policies(tmp / "policies", {"fronttest/fronttest.rego": CLIENT_HEADERS_POLICY})
    config = base_config(recorder.url, issuer.jwks_path, tmp / "audit.jsonl", policies)
    config["routes"].append({"id": "client-headers", "match": {"path": "/client-headers/**"}, "upstream": recorder.url,
                             "authenticators": ["public"], "policy": {"path": "fronttest/decision"}})
    # a route with browser sign-in (the provider's endpoints are only needed once a login starts)
    config["identity_providers"][0]["client"] = {"client_id": "iam-proxy", "client_secret": "x"}
    config["authenticators"]["browser"] = {"type": "oidc_session", "providers": ["dev"]}
    config["sessions"] = {"secret": "s" * 40}
    config["routes"].append({"id": "app", "match": {"path": "/app/**"}, "upstream": recorder.url,
                             "authenticators": ["browser"]})
    config.update(yaml.safe_load(snippet("forward-auth-config").text))
    proxy = ProxyProcess(config, tmp).wait_ready()
    proxy.issuer = issuer
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def nginx(iam, recorder, tmp_path_factory):
    front, down = free_port(), free_port()
    servers = as_written(snippet("nginx-forward-auth").text, front, iam.port, recorder.port)
    # the same snippet again, pointed at an iam-proxy that is not running
    servers += as_written(snippet("nginx-forward-auth").text, down, free_port(), recorder.port)
    process = start_nginx(tmp_path_factory.mktemp("fa-nginx"), servers, [front, down])
    yield {"port": front, "down": down}
    process.stop()


@pytest.fixture(scope="module")
def nginx_cached(iam, recorder, tmp_path_factory):
    """The forward-auth snippet with the docs' auth-cache lines added where the docs say."""
    directory = tmp_path_factory.mktemp("fa-nginx-cache")
    path_line, _, location_lines = snippet("nginx-forward-auth-cache").text.partition("\n\n")
    front = free_port()
    server = as_written(snippet("nginx-forward-auth").text, front, iam.port, recorder.port)
    server = server.replace("    location = /.iam/auth {\n", "    location = /.iam/auth {\n"
                            + "".join(f"        {line}\n" for line in location_lines.splitlines() if line))
    body = path_line.replace("/var/cache/nginx/iam-auth", str(directory / "cache")) + "\n" + server
    process = start_nginx(directory, body, [front])
    yield {"port": front}
    process.stop()


@pytest.fixture(scope="module")
def caddy(iam, recorder, tmp_path_factory):
    directory = tmp_path_factory.mktemp("fa-caddy")
    front = free_port()
    caddyfile = "{\n\tadmin off\n\tpersist_config off\n}\n\n" + as_written(
        snippet("caddy-forward-auth").text, front, iam.port, recorder.port)
    (directory / "Caddyfile").write_text(caddyfile)
    binary = shutil.which("caddy") or str(Path(sys.executable).parent / "caddy")
    env = {"XDG_DATA_HOME": str(directory / "data"), "XDG_CONFIG_HOME": str(directory / "config"),
           "HOME": str(directory)}
    process = Process([binary, "run", "--config", str(directory / "Caddyfile"), "--adapter", "caddyfile"],
                      directory / "caddy.log", env={**os.environ, **env})
    wait_for_port(front, process.proc)
    yield {"port": front}
    process.stop()


def _through(front: dict, target: str, headers: list, method: str = "GET", port_key: str = "port"):
    return send_raw(front[port_key], request_bytes(method, target, headers, host="app.test"), source=CLIENT)


def _token(iam, sub: str, groups: list[str]) -> tuple[str, str]:
    return ("Authorization", f"Bearer {iam.issuer.token(sub, groups)}")


FRONTS = ["nginx", "caddy"]


@pytest.fixture(params=FRONTS)
def front(request):
    return request.getfixturevalue(request.param)


def test_allowed_requests_reach_the_backend_with_our_identity_only(front, iam):
    r = _through(front, "/api/invoices/1", [_token(iam, "alice", ["finance"]), *SPOOFED])
    assert r.status == 200, r.body
    head = r.upstream_head()
    assert b"mallory" not in r.body and b"admin" not in r.body, head.headers
    assert head.get("X-Forwarded-User") == b"alice"
    assert head.get("X-Forwarded-Email") == b"alice@example.org"
    assert head.get("X-Iam-Assertion", ).count(b".") == 2
    assert head.get("Authorization") is None  # credentials stay at the front


def test_an_anonymous_identity_overwrites_every_client_identity_header(front, iam):
    r = _through(front, "/public/x", SPOOFED)
    assert r.status == 200, r.body
    assert b"mallory" not in r.body, r.upstream_head().headers


def test_a_policy_refusal_keeps_its_status_reasons_and_error_id(front, iam):
    r = _through(front, "/api/invoices/1", [_token(iam, "bob", ["sales"]), ("X-Request-Id", f"deny-{front['port']}")])
    assert r.status == 403, r.body
    problem = json.loads(r.body)
    assert problem["reason"] == "policy_denied"
    assert problem["reasons"] == ["user bob may not GET /api/invoices/1"]
    event = audit_event(iam, f"deny-{front['port']}")
    assert problem["error_id"] == event["decision_id"]
    assert event["client"] == {"address": CLIENT, "peer": "127.0.0.1"}


def test_no_credential_is_401_with_a_challenge(front, iam):
    r = _through(front, "/api/invoices/1", [])
    assert r.status == 401, r.body
    assert json.loads(r.body)["reason"] == "credential_missing"
    assert r.header("WWW-Authenticate", ).startswith(b"Bearer")


def test_other_refusals_keep_their_status(front, iam):
    r = _through(front, "/api/invoices%2F1", [_token(iam, "alice", ["finance"])])
    assert r.status == 400, r.body
    assert json.loads(r.body)["reason"] == "path_not_normalized"
    missing = _through(front, "/nowhere", [_token(iam, "alice", ["finance"])])
    assert missing.status == 404 and json.loads(missing.body)["reason"] == "no_route"


def test_merged_slashes_are_allowed_as_the_front_proxy_reads_them(front, iam):
    r = _through(front, "/api//invoices/1", [_token(iam, "alice", ["finance"])])
    assert r.status == 200, r.body


def test_a_client_cannot_describe_another_request(front, iam):
    bob = _token(iam, "bob", ["sales"])
    for name in ("X-Original-URI", "X-Forwarded-Uri"):
        r = _through(front, "/api/invoices/1", [bob, (name, "/public/x")])
        assert r.status in (400, 403), (name, r.status, r.body)


def test_nginx_answers_503_when_iam_proxy_is_down(nginx, iam):
    r = _through(nginx, "/api/invoices/1", [_token(iam, "alice", ["finance"])], port_key="down")
    assert r.status == 503


def test_the_problem_renderer_is_not_reachable_by_clients(nginx):
    r = _through(nginx, "/.iam/problem", [("X-Iam-Status", "200"), ("X-Iam-Reasons", '["hello"]')])
    assert r.status == 404
    assert b"hello" not in r.body


def test_forward_auth_is_refused_to_other_peers_and_nothing_is_proxied_directly(iam):
    direct = send_raw(iam.port, request_bytes("GET", "/.iam/auth", [
        ("X-Original-URI", "/api/invoices/1"), _token(iam, "alice", ["finance"])]), source="127.0.0.2")
    assert direct.status == 404 and json.loads(direct.body)["reason"] == "forward_auth_not_served"
    assert direct.header("X-Iam-Assertion") is None
    proxied = send_raw(iam.port, request_bytes("GET", "/api/invoices/1", [_token(iam, "alice", ["finance"])]))
    assert proxied.status == 404 and json.loads(proxied.body)["reason"] == "proxying_disabled"


def test_traefik_requests_are_answered_as_the_snippet_expects(iam):
    """Traefik has no binary here: send what its forwardAuth sends (X-Forwarded-Method, -Uri,
    -Host, -Proto, -For, the client's other headers) and check the answer carries every header
    the snippet's authResponseHeaders copies, so each one replaces a client's copy."""
    middleware = yaml.safe_load(snippet("traefik-forward-auth").text)["http"]["middlewares"]
    copied = middleware["iam"]["forwardAuth"]["authResponseHeaders"]
    assert middleware["iam"]["forwardAuth"]["address"].endswith("/.iam/auth")
    cleared = set(middleware["iam-clear"]["headers"]["customRequestHeaders"])
    sent = [("X-Forwarded-Method", "GET"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "app.test"),
            ("X-Forwarded-Uri", "/public/x"), ("X-Forwarded-For", CLIENT), ("X-Request-Id", "traefik-1")]
    r = send_raw(iam.port, request_bytes("GET", "/.iam/auth", sent))
    assert r.status == 200
    for name in copied:
        assert r.header(name) is not None, name  # present (empty for an anonymous identity)
    assert {"X-Remote-User", "Remote-User", "X-Forwarded-Roles", "X-Original-URI"} <= cleared
    assert audit_event(iam, "traefik-1")["client"]["address"] == CLIENT


def test_the_docs_auth_cache_is_keyed_by_host_and_every_credential(nginx_cached, iam):
    alice = _token(iam, "alice", ["finance"])

    def ask(request_id: str, *headers, host: str = "app.test") -> int:
        raw = request_bytes("GET", "/api/invoices/1", [alice, ("X-Request-Id", request_id), *headers], host=host)
        return send_raw(nginx_cached["port"], raw, source=CLIENT).status

    assert ask("cache-1") == 200 and ask("cache-2") == 200  # the second answer comes from nginx's cache
    assert ask("cache-3", host="other.test") == 200  # another host: asked again
    assert ask("cache-4", ("Cookie", "sid=other")) == 200  # another credential: asked again
    for request_id in ("cache-1", "cache-3", "cache-4"):
        audit_event(iam, request_id)
    assert not [e for e in iam.audit_events() if e["request_id"] == "cache-2"]


def test_nginx_passes_what_iam_proxy_sets_for_the_client(nginx):
    r = _through(nginx, "/client-headers/x", [])
    assert r.status == 200, r.body
    assert r.header("Set-Cookie") == b"__Host-iam_session=refreshed; Path=/; Secure; HttpOnly"
    assert r.header("WWW-Authenticate") == b"Negotiate b2s="


def test_traefik_snippet_passes_the_session_cookie_iam_proxy_sets(iam):
    forward = yaml.safe_load(snippet("traefik-forward-auth").text)["http"]["middlewares"]["iam"]["forwardAuth"]
    assert forward["addAuthCookiesToResponse"] == [iam.config.get("sessions", {}).get("cookie_name",
                                                                                     "__Host-iam_session")]
    r = send_raw(iam.port, request_bytes("GET", "/.iam/auth", [("X-Forwarded-Uri", "/client-headers/x"),
                                                                ("X-Forwarded-Method", "GET")]))
    assert r.status == 200 and r.header("Set-Cookie").startswith(b"__Host-iam_session=")


def test_a_browser_without_a_session_is_sent_to_sign_in(front):
    r = _through(front, "/app/reports?q=1", [("Accept", "text/html")])
    assert r.status == 302, r.body
    assert r.header("Location").startswith(b"/.iam/login?rd=%2Fapp%2Freports%3Fq%3D1")


def test_the_problem_renderer_never_redirects_off_the_proxy_nor_echoes_bad_values(iam):
    r = send_raw(iam.port, request_bytes("GET", "/.iam/problem", [
        ("X-Iam-Status", "302"), ("X-Iam-Location", "https://evil.example/"), ("X-Iam-Reason", "<script>"),
        ("X-Iam-Error-Id", "a b"), ("X-Iam-Reasons", '{"not": "a list"}')]))
    assert r.status == 503 and r.header("Location") is None
    problem = json.loads(r.body)
    assert problem["reason"] == "authn_unavailable" and problem["error_id"] == "-" and "reasons" not in problem
