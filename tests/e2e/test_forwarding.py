"""Forwarding through the real proxy: routing, streaming, timeouts, header hygiene, errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey
import pytest
import yaml

from support import audit_event, free_port, run_cli, upstream_headers

MB = 1024 * 1024


@pytest.fixture
def finance(issuer):
    return {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}


def test_unknown_route_is_404_never_a_default_allow(proxy, finance):
    with proxy.client() as c:
        r = c.get("/admin/secrets", headers=finance)
    assert r.status_code == 404
    assert r.json()["reason"] == "no_route"


def test_overlapping_routes_fail_closed(proxy_factory, proxy_config, finance):
    routes = proxy_config["routes"]
    routes.append({**routes[0], "id": "api-shadow", "match": {"path": "/api/invoices/**"}})
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        r = c.get("/api/invoices/1", headers=finance)
        other = c.get("/api/reports/1", headers=finance)
    assert r.status_code == 500
    assert r.json()["reason"] == "route_ambiguous"
    assert other.status_code == 403  # only one route matches: the policy decides


@pytest.mark.parametrize("path", ["/public/../api/invoices/1", "/public/%2e%2e/api/invoices/1",
                                  "/api/invoices%2f1"])
def test_dot_segments_and_encoded_slashes_are_refused(proxy, path):
    # a raw socket, because HTTP clients normalize such paths before sending
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(request)
        status_line = s.recv(4096).split(b"\r\n", 1)[0]
    assert b" 400 " in status_line


def test_upstream_down_is_502(proxy_factory, proxy_config, finance):
    proxy_config["routes"][0]["upstream"] = f"http://127.0.0.1:{free_port()}"
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        r = c.get("/api/invoices/1", headers=finance)
    assert r.status_code == 502
    assert r.json()["reason"] == "upstream_unavailable"
    assert "127.0.0.1" not in r.text  # no internals in the body


def test_slow_upstream_is_504(proxy, finance):
    with proxy.client() as c:  # the route's timeout is 2 s in the test config
        r = c.get("/api/invoices/1", params={"_sleep": "4"}, headers=finance)
    assert r.status_code == 504
    assert r.json()["reason"] == "upstream_timeout"


def _peak_rss_kb(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def test_50mb_upload_and_download_are_streamed(proxy, finance):
    size = 50 * MB
    before = _peak_rss_kb(proxy.process.pid)

    chunks = [os.urandom(MB) for _ in range(size // MB)]
    expected = hashlib.sha256(b"".join(chunks))
    with proxy.client(timeout=120) as c:
        up = c.post("/api/invoices/upload", content=iter(chunks), headers=finance)
        assert up.status_code == 200, up.text
        assert up.json()["body"] == {"bytes": size, "sha256": expected.hexdigest()}

        received = 0
        with c.stream("GET", "/api/invoices/export", params={"_download": str(size)}, headers=finance) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                received += len(chunk)
    assert received == size
    # Streaming, not buffering: the proxy's peak memory grew by far less than the 100 MB that passed.
    assert _peak_rss_kb(proxy.process.pid) - before < 40 * 1024


def test_hop_by_hop_and_connection_listed_headers_are_removed(proxy, finance):
    with proxy.client() as c:
        r = c.get("/api/invoices/1", headers={**finance, "Connection": "keep-alive, X-Secret-Hop",
                                              "X-Secret-Hop": "1", "Keep-Alive": "timeout=5", "TE": "trailers",
                                              "X-Kept": "yes"})
    names = {k.lower() for k, _ in r.json()["header_list"]}
    assert "x-secret-hop" not in names and "keep-alive" not in names and "te" not in names
    assert "x-kept" in names


def test_forwarded_headers_from_untrusted_clients_are_replaced(proxy, finance):
    with proxy.client() as c:
        r = c.get("/api/invoices/1", headers={**finance, "X-Forwarded-For": "6.6.6.6",
                                              "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    headers = {k.lower(): v for k, v in r.json()["header_list"]}
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"


def test_forwarded_headers_from_a_trusted_proxy_are_extended(proxy_factory, proxy_config, finance):
    proxy_config["listeners"]["trusted_proxies"] = ["127.0.0.0/8"]
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        r = c.get("/api/invoices/1", headers={**finance, "X-Forwarded-For": "203.0.113.7",
                                              "X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example"})
    headers = {k.lower(): v for k, v in r.json()["header_list"]}
    assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "api.example"
    event = proxy.wait_audit(1)[-1]
    assert event["client"]["address"] == "203.0.113.7"


def test_query_string_and_method_reach_upstream(proxy, finance):
    with proxy.client() as c:
        r = c.put("/api/invoices/9?expand=lines&x=%20y", headers=finance, content=b"{}")
    assert r.status_code == 200
    assert r.json()["method"] == "PUT"
    assert r.json()["path"] == "/api/invoices/9?expand=lines&x=%20y"


def test_errors_are_problem_details_without_internals(proxy):
    with proxy.client() as c:
        r = c.get("/nowhere")
    body = r.json()
    assert set(body) == {"type", "title", "status", "reason", "error_id"}
    assert "Traceback" not in r.text


def test_health_and_readiness(proxy):
    with httpx.Client(base_url=proxy.admin_url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        metrics = c.get("/metrics").text
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"accepting": True, "policies": True, "policy:opa-lib": True, "jwks:dev": True}
    assert "iam_proxy_requests_total" in metrics


def test_not_ready_while_jwks_unreachable(proxy_factory, proxy_config):
    provider = proxy_config["identity_providers"][0]
    provider.pop("jwks_file")
    provider["jwks_uri"] = f"http://127.0.0.1:{free_port()}/jwks"
    proxy = proxy_factory(proxy_config)
    with httpx.Client(base_url=proxy.admin_url) as c:
        ready = c.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["jwks:dev"] is False


def test_forward_auth_answers_with_identity_headers(proxy_factory, proxy_config, finance, issuer):
    proxy_config["forward_auth"] = {"trusted_peers": ["127.0.0.1/32"]}
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        ok = c.get("/.iam/auth", headers={**finance, "X-Original-URI": "/api/invoices/1",
                                          "X-Original-Method": "GET"})
        denied = c.get("/.iam/auth", headers={
            "Authorization": f"Bearer {issuer.token('bob', ['sales'])}",
            "X-Original-URI": "/api/invoices/1", "X-Original-Method": "GET"})
        anonymous = c.get("/.iam/auth", headers={"X-Original-URI": "/api/invoices/1"})
    assert ok.status_code == 200
    assert ok.headers["x-forwarded-user"] == "alice"
    assert "x-iam-assertion" in ok.headers
    assert denied.status_code == 403
    assert anonymous.status_code == 401


def test_a_reused_assertion_is_the_same_for_one_identity_and_its_own_for_another(proxy_factory, proxy_config,
                                                                                  finance, issuer):
    proxy_config["identity_headers"] = {"assertion": {"reuse_seconds": 30}}
    proxy = proxy_factory(proxy_config)
    auditors = {"Authorization": f"Bearer {issuer.token('carol', ['auditors'])}"}

    def assertion(c, headers, request_id):
        r = c.get("/api/invoices/1", headers={**headers, "X-Request-Id": request_id})
        assert r.status_code == 200, r.text
        return upstream_headers(r)["x-iam-assertion"]

    with proxy.client() as c:
        first, again, other = assertion(c, finance, "r1"), assertion(c, finance, "r2"), assertion(c, auditors, "r3")
        jwks = KeySet.import_key_set(c.get("/.well-known/jwks.json").json())
    assert first == again != other
    claims = jwt.decode(first, jwks, algorithms=["ES256"]).claims
    assert (claims["sub"], claims["groups"]) == ("alice", ["finance"])
    assert jwt.decode(other, jwks, algorithms=["ES256"]).claims["sub"] == "carol"
    # its jti names the decision that minted it: alice's first request, not her second
    assert claims["jti"] == audit_event(proxy, "r1")["decision_id"] != audit_event(proxy, "r2")["decision_id"]


def test_an_ed25519_assertion_reaches_the_upstream_and_verifies_with_the_served_jwks(proxy_factory, proxy_config,
                                                                                     finance, tmp_path):
    key_file = tmp_path / "assertion-ed25519.pem"
    key_file.write_bytes(OKPKey.generate_key("Ed25519", private=True).as_pem(private=True))
    proxy_config["identity_headers"] = {"assertion": {"algorithm": "Ed25519", "key_file": str(key_file)}}
    proxy_config["forward_auth"] = {"trusted_peers": ["127.0.0.1/32"]}
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        forwarded = c.get("/api/invoices/1", headers={**finance, "X-Request-Id": "ed1"})
        checked = c.get("/.iam/auth", headers={**finance, "X-Original-URI": "/api/invoices/1",
                                               "X-Original-Method": "GET"})
        served = c.get("/.well-known/jwks.json").json()
    assert forwarded.status_code == checked.status_code == 200, (forwarded.text, checked.text)
    [key] = served["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("OKP", "Ed25519", "Ed25519") and "d" not in key
    jwks = KeySet.import_key_set(served)
    for token in (upstream_headers(forwarded)["x-iam-assertion"], checked.headers["x-iam-assertion"]):
        verified = jwt.decode(token, jwks, algorithms=["Ed25519"])
        assert (verified.header["alg"], verified.claims["sub"], verified.claims["aud"]) == ("Ed25519", "alice", "api")
        with pytest.raises(BadSignatureError):
            jwt.decode(token, OKPKey.generate_key("Ed25519", private=True), algorithms=["Ed25519"])
        with pytest.raises(JoseError):  # a verifier pinned to ES256 refuses it
            jwt.decode(token, jwks, algorithms=["ES256"])
    assert jwt.decode(upstream_headers(forwarded)["x-iam-assertion"], jwks,
                      algorithms=["Ed25519"]).claims["jti"] == audit_event(proxy, "ed1")["decision_id"]


def test_an_assertion_key_that_does_not_fit_the_algorithm_stops_the_proxy_naming_the_key(proxy_config, tmp_path):
    key_file = tmp_path / "p256.pem"
    key_file.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    proxy_config["identity_headers"] = {"assertion": {"algorithm": "Ed25519", "key_file": str(key_file)}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(proxy_config))
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert f"identity_headers.assertion.key_file: {key_file} is not an Ed25519 key" in result.stderr


def test_concurrent_uncached_decisions_each_answer_their_own_request(proxy_factory, proxy_config, issuer):
    # the engine evaluates the decisions of one turn of the event loop together, and the signer signs
    # their assertions together: none may answer another
    proxy_config["routes"][0]["policy"]["cache"] = False
    proxy = proxy_factory(proxy_config)
    callers = {"alice": issuer.token("alice", ["finance"]), "bob": issuer.token("bob", ["sales"]),
               "carol": issuer.token("carol", ["auditors"])}
    expected = {"alice": 200, "bob": 403, "carol": 200}  # auditors read invoices; sales do not
    asked = [(f"c{n}-{name}", name) for n in range(20) for name in callers]

    async def ask_all():
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10,
                                     limits=httpx.Limits(max_connections=len(asked))) as client:
            answers = await asyncio.gather(*(client.get("/api/invoices/1", headers={
                "Authorization": f"Bearer {callers[name]}", "X-Request-Id": request_id}) for request_id, name in asked))
            return answers, KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())

    answers, jwks = asyncio.run(ask_all())
    assert [r.status_code for r in answers] == [expected[name] for _, name in asked]
    for (request_id, name), answer in zip(asked, answers):
        event = audit_event(proxy, request_id)
        assert (event["identity"]["sub"], event["decision"]["allowed"]) == (name, expected[name] == 200)
        if answer.status_code == 200:
            sent = upstream_headers(answer)
            assertion = jwt.decode(sent["x-iam-assertion"], jwks, algorithms=["ES256"]).claims
            assert (sent["x-forwarded-user"], assertion["sub"], assertion["jti"]) == (name, name, event["decision_id"])
