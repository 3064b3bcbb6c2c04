"""Audit is not optional: the event is recorded before the response completes, and a request whose
event cannot be recorded is refused (audit.on_failure: deny) or, if so configured, answered (allow),
logged and counted either way. The real proxy process, spoken to with raw bytes.

The record is made to fail with an audit file on /dev/full (every write fails with ENOSPC). Only the
first request tells: after a failed write the file is unhealthy and the proxy refuses new requests
at the door (503 audit_unavailable) until it can write again.
"""

from __future__ import annotations

import socket

import pytest


ANSWERS = {  # what each request gets when its event can be recorded
    "allowed": 200, "unauthenticated": 401, "denied": 403, "forward-auth": 200, "no route": 404,
}


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send `request` as bytes and read until the proxy closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _request(kind: str, issuer) -> bytes:
    target, headers = {
        "allowed": ("/api/invoices/1", f"Authorization: Bearer {issuer.token('alice', ['finance'])}\r\n"),
        "unauthenticated": ("/api/invoices/1", ""),
        "denied": ("/api/invoices/1", f"Authorization: Bearer {issuer.token('bob', ['sales'])}\r\n"),
        "forward-auth": ("/.iam/auth", "X-Original-URI: /public/hello\r\n"),
        "no route": ("/nowhere", ""),
    }[kind]
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode()


@pytest.fixture
def proxy_config(proxy_config: dict) -> dict:
    """The test client is also the front proxy of the forward-auth answers."""
    return {**proxy_config, "forward_auth": {"trusted_peers": ["127.0.0.1/32"]}}


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _unwritable_audit(proxy_config, on_failure: str | None = None) -> dict:
    proxy_config["audit"] = {"sinks": [{"type": "file", "path": "/dev/full", "chain": {"enabled": False}}]}
    if on_failure:
        proxy_config["audit"]["on_failure"] = on_failure
    return proxy_config


@pytest.mark.parametrize("kind", list(ANSWERS))
def test_a_request_whose_event_cannot_be_written_is_refused(proxy_factory, proxy_config, issuer, kind):
    proxy = proxy_factory(_unwritable_audit(proxy_config))
    response = raw_exchange(proxy.port, _request(kind, issuer))
    assert _status(response) == 503, response[:200]
    assert b'"reason":"audit_unavailable"' in response
    error_id = response.split(b"x-iam-error-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    assert proxy.metric("iam_proxy_audit_record_failures_total", 'action="refused"') == 1
    assert proxy.metric("iam_proxy_audit_failed_attempts_total", 'sink="file0"') == 1
    log = proxy.process.logs()
    assert f"audit: the event of request {error_id} could not be recorded" in log
    assert "No space left on device" in log and "the request is refused" in log


def test_on_failure_allow_answers_and_counts(proxy_factory, proxy_config, issuer):
    proxy = proxy_factory(_unwritable_audit(proxy_config, "allow"))
    response = raw_exchange(proxy.port, _request("unauthenticated", issuer))
    assert _status(response) == ANSWERS["unauthenticated"]
    assert proxy.metric("iam_proxy_audit_record_failures_total", 'action="answered"') == 1
    assert proxy.metric("iam_proxy_audit_record_failures_total", 'action="refused"') == 0
    assert "the request is answered anyway (audit.on_failure: allow)" in proxy.process.logs()


def test_every_outcome_is_recorded_once_with_its_status(proxy_factory, proxy_config, issuer, tmp_path):
    proxy_config["audit"] = {"spool": {"dir": str(tmp_path / "spool")},
                             "sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]}
    # a route whose upstream is down (502) and one limited to one request a minute (the second is 429)
    public = next(r for r in proxy_config["routes"] if r["id"] == "public")
    proxy_config["routes"] += [{**public, "id": "down", "match": {"path": "/down/**"}, "upstream": "http://127.0.0.1:9"},
                               {**public, "id": "limited", "match": {"path": "/limited/**"}}]
    proxy_config["rate_limits"] = {"limits": [{"id": "one", "key": "route", "requests": 1, "per_seconds": 60,
                                               "burst": 1, "routes": ["limited"]}]}
    proxy = proxy_factory(proxy_config)
    extra = {"upstream down": ("/down/x", 502), "quota used": ("/limited/x", 200), "rate limited": ("/limited/x", 429)}
    answers = {**ANSWERS, **{kind: status for kind, (_, status) in extra.items()}}
    statuses = {kind: _status(raw_exchange(proxy.port, _request(kind, issuer))) for kind in ANSWERS}
    for kind, (target, _) in extra.items():
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        statuses[kind] = _status(raw_exchange(proxy.port, request))
    assert statuses == answers
    events = proxy.audit_events()  # the file, fed from the spool in the same call as the append
    assert sorted(e["status"] for e in events) == sorted(answers.values())
    assert {e["response"] for e in events} == {"complete"}
    assert len({e["decision_id"] for e in events}) == len(answers)
    assert {e["reason"] for e in events if e["status"] in (429, 502)} == {"rate_limited", "upstream_unavailable"}


def test_a_client_that_leaves_early_is_recorded_as_incomplete(proxy):
    """A request that got no response may have an event; it says so."""
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        # a body announced but never sent: the proxy waits for it, then sees the client leave
        s.sendall(b"POST /public/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    events = proxy.wait_audit(1)
    assert len(events) == 1
    assert events[0]["response"] == "incomplete" and events[0]["reason"] == "client_disconnected"


def test_the_published_keys_are_served_and_audited_like_any_own_endpoint(proxy):
    response = raw_exchange(proxy.port, b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(response) == 200 and b'"keys"' in response
    events = proxy.wait_audit(1)
    assert [(e["status"], e["outcome"], e["reason"], e["response"]) for e in events] == [(200, "allowed", "jwks", "complete")]
