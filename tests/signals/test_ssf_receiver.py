"""The Shared Signals receiver in a real proxy process, fed real signed SETs by a real transmitter
(tests/signals/transmitter.py), by push (RFC 8935) and by poll (RFC 8936)."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest

from support import wait_until
from transmitter import CAEP, RISC, Transmitter

PUSH_AUTH = "Bearer push-secret"


@pytest.fixture
def transmitter() -> Iterator[Transmitter]:
    server = Transmitter()
    yield server
    server.stop()


def _signals(transmitter: Transmitter, **overrides) -> dict:
    return {"transmitters": [{
        "id": "idp", "issuer": transmitter.issuer, "audience": transmitter.audience,
        "configuration_url": f"{transmitter.url}/.well-known/ssf-configuration",
        "bearer_token": transmitter.token, "push_authorization": PUSH_AUTH, **overrides}]}


def _start(proxy_factory, proxy_config, transmitter, **overrides):
    proxy_config["signals"] = _signals(transmitter, **overrides)
    proxy = proxy_factory(proxy_config)
    wait_until(lambda: "GET /jwks" in transmitter.hits, what="the receiver to fetch the transmitter's keys")
    return proxy


def _push(proxy, transmitter, token, **kw) -> httpx.Response:
    """Push, waiting out the moment between fetching the keys and being ready (503)."""
    response = transmitter.push(f"{proxy.url}/.iam/ssf/events", token, **kw)
    deadline = time.monotonic() + 5
    while response.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
        response = transmitter.push(f"{proxy.url}/.iam/ssf/events", token, **kw)
    return response


def _get(proxy, token: str) -> httpx.Response:
    return httpx.get(f"{proxy.url}/api/invoices/1", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _signal_events(proxy) -> list[dict]:
    return [e for e in proxy.audit_events() if e.get("kind") == "signal"]


def test_session_revoked_by_push_refuses_tokens_issued_before_it(proxy_factory, proxy_config, issuer, transmitter):
    proxy = _start(proxy_factory, proxy_config, transmitter)
    alice, bob = issuer.token("alice", ["finance"]), issuer.token("bob", ["finance"])
    assert _get(proxy, alice).status_code == 200

    _, revoked = transmitter.issue(CAEP + "session-revoked", {"format": "iss_sub", "iss": issuer.issuer, "sub": "alice"})
    pushed = _push(proxy, transmitter, revoked)
    assert (pushed.status_code, pushed.content) == (202, b"")

    refused = _get(proxy, alice)
    assert refused.status_code == 401
    assert refused.json()["reason"] == "subject_revoked"
    assert _get(proxy, bob).status_code == 200  # someone else is untouched
    time.sleep(1.1)  # iat has a one-second grain: the next token is issued after the event
    assert _get(proxy, issuer.token("alice", ["finance"])).status_code == 200  # signed in again

    signal = wait_until(lambda: _signal_events(proxy), what="the signal's audit event")[0]
    assert (signal["outcome"], signal["reason"]) == ("accepted", "session-revoked")
    assert signal["identity"] == {"sub": "alice", "iss": issuer.issuer, "format": "iss_sub"}
    assert signal["signal"]["delivery"] == "push" and signal["signal"]["revoked"] == 1
    denied = [e for e in proxy.audit_events() if e.get("reason") == "subject_revoked"]
    assert len(denied) == 1 and denied[0]["status"] == 401


def test_account_disabled_by_email_and_a_replayed_set_is_acted_on_once(proxy_factory, proxy_config, issuer, transmitter):
    proxy = _start(proxy_factory, proxy_config, transmitter)
    carol = issuer.token("carol", ["finance"])
    jti, disabled = transmitter.issue(RISC + "account-disabled", {"format": "email", "email": "Carol@Example.org"},
                                      reason="hijacking")
    assert _push(proxy, transmitter, disabled).status_code == 202
    assert _get(proxy, carol).json()["reason"] == "subject_revoked"
    assert _push(proxy, transmitter, disabled).status_code == 202  # a retry is accepted, not acted on again
    outcomes = [(e["outcome"], e["signal"]["jti"]) for e in wait_until(lambda: len(_signal_events(proxy)) == 2
                                                                   and _signal_events(proxy), what="2 signals")]
    assert outcomes == [("accepted", jti), ("duplicate", jti)]


@pytest.mark.parametrize("case, err", [
    ("typ", "invalid_request"), ("audience", "invalid_audience"), ("key", "invalid_key"),
    ("issuer", "invalid_issuer"), ("events", "invalid_request")])
def test_refused_sets_answer_400_with_the_rfc_error(proxy_factory, proxy_config, issuer, transmitter, case, err):
    from joserfc.jwk import RSAKey

    proxy = _start(proxy_factory, proxy_config, transmitter)
    subject = {"format": "iss_sub", "iss": issuer.issuer, "sub": "alice"}
    kw = {"typ": {"typ": "JWT"}, "audience": {"aud": "someone-else"},
          "key": {"key": RSAKey.generate_key(2048, private=True)}, "issuer": {"issuer": "https://evil.example"},
          "events": {}}[case]
    _, token = transmitter.issue(CAEP + "session-revoked", subject, **kw)
    if case == "events":  # a JWT of the right type, signed by the transmitter, with no events
        from joserfc import jwt

        token = jwt.encode({"alg": "RS256", "kid": transmitter.kid, "typ": "secevent+jwt"},
                           {"iss": transmitter.issuer, "aud": transmitter.audience, "iat": int(time.time()),
                            "jti": "x"}, transmitter.key)
    response = _push(proxy, transmitter, token)
    assert response.status_code == 400
    assert response.json()["err"] == err and response.json()["description"]
    assert _get(proxy, issuer.token("alice", ["finance"])).status_code == 200  # nothing was revoked
    rejected = wait_until(lambda: _signal_events(proxy), what="the rejection's audit event")[0]
    assert rejected["outcome"] == "rejected" and rejected["signal"]["err"] == err


def test_push_needs_its_authorization_and_content_type(proxy_factory, proxy_config, issuer, transmitter):
    proxy = _start(proxy_factory, proxy_config, transmitter)
    _, token = transmitter.issue(CAEP + "session-revoked", {"format": "opaque", "id": "alice"})
    response = _push(proxy, transmitter, token, authorization="Bearer wrong")
    assert (response.status_code, response.json()["err"]) == (401, "authentication_failed")
    response = _push(proxy, transmitter, token, content_type="application/jwt")
    assert (response.status_code, response.json()["err"]) == (400, "invalid_request")
    assert _get(proxy, issuer.token("alice", ["finance"])).status_code == 200
    assert [e["reason"] for e in wait_until(lambda: len(_signal_events(proxy)) == 2 and _signal_events(proxy),
                                       what="2 refusals")] == ["push_unauthorized", "push_content_type"]


def test_poll_delivery_with_a_managed_stream_acts_and_acknowledges(proxy_factory, proxy_config, issuer, transmitter):
    proxy = _start(proxy_factory, proxy_config, transmitter, delivery="poll", manage_stream=True,
                   poll_interval_seconds=0.2)
    stream = wait_until(lambda: transmitter.streams, what="the receiver to create its stream")[0]
    assert stream["delivery"]["method"] == "urn:ietf:rfc:8936"
    assert CAEP + "session-revoked" in stream["events_requested"]
    dave = issuer.token("dave", ["finance"])
    assert _get(proxy, dave).status_code == 200

    jti, token = transmitter.issue(RISC + "credential-compromise", {"format": "iss_sub", "iss": issuer.issuer,
                                                                   "sub": "dave"}, credential_type="password")
    bad_jti, bad = transmitter.issue(CAEP + "session-revoked", {"format": "opaque", "id": "x"}, aud="someone-else")
    queued_at = time.monotonic()
    transmitter.enqueue(jti, token)
    transmitter.enqueue(bad_jti, bad)
    wait_until(lambda: _get(proxy, dave).status_code == 401, what="the polled revocation to apply")
    acted_in = time.monotonic() - queued_at
    assert acted_in < 3, f"acted on the polled SET after {acted_in:.1f}s"
    wait_until(lambda: jti in transmitter.acked, what="the acknowledgement")
    assert transmitter.set_errors[bad_jti]["err"] == "invalid_audience"
    assert bad_jti not in transmitter.acked
    events = {e["signal"]["jti"]: e for e in _signal_events(proxy)}
    assert events[jti]["outcome"] == "accepted" and events[jti]["signal"]["delivery"] == "poll"

    proxy.stop()  # a restart reuses the stream instead of creating another
    proxy_factory(proxy.config, name="again")
    wait_until(lambda: transmitter.hits.count("GET /ssf/stream") >= 2, what="the second stream lookup")
    time.sleep(0.3)
    assert len(transmitter.streams) == 1


def test_workers_share_revocations_and_a_restart_keeps_them(proxy_factory, proxy_config, issuer, transmitter, tmp_path):
    proxy_config["listeners"]["workers"] = 2
    proxy_config["signals"] = {**_signals(transmitter), "state_file": str(tmp_path / "revocations.jsonl")}
    proxy = proxy_factory(proxy_config)
    wait_until(lambda: transmitter.hits.count("GET /jwks") >= 2, what="both workers to fetch the keys")
    erin = issuer.token("erin", ["finance"])
    _, revoked = transmitter.issue(CAEP + "session-revoked", {"format": "iss_sub", "iss": issuer.issuer, "sub": "erin"})
    assert _push(proxy, transmitter, revoked).status_code == 202  # reaches one of the two workers
    time.sleep(0.2)
    statuses = {_get(proxy, erin).status_code for _ in range(20)}  # a new connection each: both workers
    assert statuses == {401}

    proxy.stop()
    again = proxy_factory(proxy.config, name="restarted")
    assert _get(again, erin).json()["reason"] == "subject_revoked"  # remembered across the restart


def test_several_workers_need_the_state_file(proxy_config, transmitter, tmp_path):
    import yaml

    from support import run_cli

    proxy_config["listeners"]["workers"] = 2
    proxy_config["signals"] = _signals(transmitter)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(proxy_config))
    check = run_cli("check", "--config", str(path))
    assert check.returncode == 2 and "signals.state_file" in check.stderr


def test_claims_change_drops_cached_lookups_and_revokes_nothing(proxy_factory, proxy_config, issuer, transmitter):
    proxy = _start(proxy_factory, proxy_config, transmitter)
    frank = issuer.token("frank", ["finance"])
    assert _get(proxy, frank).status_code == 200
    assert _get(proxy, frank).status_code == 200  # the second decision comes from the decision cache
    _, changed = transmitter.issue(CAEP + "token-claims-change", {"format": "iss_sub", "iss": issuer.issuer,
                                                                  "sub": "frank"}, claims={"groups": ["sales"]})
    assert _push(proxy, transmitter, changed).status_code == 202
    assert _get(proxy, frank).status_code == 200  # not a revocation
    signal = wait_until(lambda: _signal_events(proxy), what="the signal")[0]["signal"]
    assert (signal["refreshed"], signal["revoked"]) == (1, 0)
    assert signal["decisions_dropped"] >= 1


def test_unknown_event_types_are_accepted_audited_and_ignored(proxy_factory, proxy_config, issuer, transmitter):
    proxy = _start(proxy_factory, proxy_config, transmitter)
    _, token = transmitter.issue(RISC + "account-enabled", {"format": "opaque", "id": "alice"})
    assert _push(proxy, transmitter, token).status_code == 202
    assert _get(proxy, issuer.token("alice", ["finance"])).status_code == 200
    signal = wait_until(lambda: _signal_events(proxy), what="the signal")[0]
    assert signal["outcome"] == "accepted" and signal["signal"]["ignored"] == [RISC + "account-enabled"]
