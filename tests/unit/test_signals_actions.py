"""What the receiver does with each kind of event, on the proxy's real caches where they can stand
alone (decision cache, revocations) and recording stand-ins for the session store, introspection
and enrichment (tests/signals runs the whole receiver against a real proxy)."""

from __future__ import annotations

import asyncio

import pytest

from iam_proxy.core.identity import Identity
from iam_proxy.policy.cache import DecisionCache
from iam_proxy.settings.policy import DecisionCacheSettings
from iam_proxy.settings.signals import SignalsSettings
from iam_proxy.signals import ASSURANCE_LEVEL_CHANGE, CREDENTIAL_COMPROMISE, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE
from iam_proxy.signals.receiver import Caches, Receiver
from iam_proxy.signals.revocations import Revocations
from iam_proxy.signals.tokens import SecurityEventToken

IDP = "https://idp.example"
ALICE = Identity(sub="u-1", method="introspection", iss=IDP, email="alice@example.org", issued_at=1000)
BOB = Identity(sub="u-2", method="introspection", iss=IDP, email="bob@example.org", issued_at=1000)


class Sessions:
    def __init__(self) -> None:
        self.ended: list[tuple[str, dict]] = []

    async def end_idp_session(self, provider: str, **which: str) -> int:
        self.ended.append((provider, which))
        return 1


class Introspection:
    def __init__(self, identities: list[Identity]) -> None:
        self.cached = list(identities)

    def forget(self, match) -> int:
        gone = [identity for identity in self.cached if match(identity)]
        self.cached = [identity for identity in self.cached if identity not in gone]
        return len(gone)


class Enricher:
    def __init__(self, subs: set[str]) -> None:
        self.cached = set(subs)

    def forget(self, subs: set[str]) -> int:
        gone = self.cached & subs
        self.cached -= gone
        return len(gone)


@pytest.fixture
def world():
    settings = SignalsSettings(transmitters=[{"id": "idp", "issuer": IDP, "audience": "iam-proxy",
                                              "jwks_uri": f"{IDP}/jwks"}])
    decisions = DecisionCache(DecisionCacheSettings())
    decisions.put("rev", decisions.key("rev", "a/b", {"identity": {"sub": "u-1"}}), object())
    caches = Caches(sessions=Sessions(), session_providers={"corp": IDP},
                    introspection=[Introspection([ALICE, BOB])], enrichers=[Enricher({"u-1", "u-2"})],
                    decision_cache=decisions)
    revocations = Revocations(ttl_seconds=600, clock=lambda: 1500.0)
    return Receiver(settings, revocations, caches, auditor=None), caches, revocations


def _act(receiver: Receiver, event_type: str, subject: dict) -> dict:
    event = SecurityEventToken(transmitter="idp", iss=IDP, jti="j-1", iat=1200.0,
                               events={event_type: {"subject": subject}}, sub_id=None)
    return asyncio.run(receiver._act(event))


def test_a_revoking_event_ends_sessions_drops_every_cache_of_the_subject_and_refuses_old_tokens(world):
    receiver, caches, revocations = world
    done = _act(receiver, SESSION_REVOKED, {"format": "iss_sub", "iss": IDP, "sub": "u-1"})
    assert done["revoked"] == 1 and done["refreshed"] == 0
    assert caches.sessions.ended == [("corp", {"sub": "u-1"})] and done["sessions_ended"] == 1
    assert caches.introspection[0].cached == [BOB] and done["introspection_dropped"] == 1
    assert caches.enrichers[0].cached == {"u-2"} and done["enrichment_dropped"] == 1
    assert done["decisions_dropped"] == 1
    assert revocations.refuses(ALICE) and not revocations.refuses(BOB)


def test_a_complex_subject_ends_the_named_idp_session(world):
    receiver, caches, _ = world
    subject = {"user": {"format": "email", "email": "Alice@Example.org"}, "session": {"format": "opaque", "id": "s-9"}}
    done = _act(receiver, CREDENTIAL_COMPROMISE, subject)
    assert caches.sessions.ended == [("corp", {"idp_session_id": "s-9"})] and done["sessions_ended"] == 1
    assert caches.introspection[0].cached == [BOB]  # matched by the email


@pytest.mark.parametrize("event_type", [ASSURANCE_LEVEL_CHANGE, TOKEN_CLAIMS_CHANGE])
def test_a_refreshing_event_drops_what_was_looked_up_and_revokes_nothing(world, event_type):
    receiver, caches, revocations = world
    done = _act(receiver, event_type, {"format": "iss_sub", "iss": IDP, "sub": "u-1"})
    assert (done["refreshed"], done["revoked"], done["sessions_ended"]) == (1, 0, 0)
    assert caches.sessions.ended == []
    assert (done["introspection_dropped"], done["enrichment_dropped"], done["decisions_dropped"]) == (1, 1, 1)
    assert not revocations.refuses(ALICE)


class _Verifier:
    def __init__(self, event: SecurityEventToken) -> None:
        self.event = event

    async def verify(self, token: str) -> SecurityEventToken:
        return self.event


class _Auditor:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def record(self, record: dict) -> None:
        self.records.append(record)


def test_a_set_refused_for_its_subject_is_refused_again_when_resent_not_taken_as_a_duplicate(world):
    # a transmitter may resend a SET it got 400 for (Keycloak 26.7 retries any failed push):
    # answering the resend 202 "duplicate" would tell it the event was acted on
    receiver, _, revocations = world
    receiver.auditor = _Auditor()
    unreadable = SecurityEventToken(transmitter="idp", iss=IDP, jti="j-9", iat=1200.0,
                                    events={SESSION_REVOKED: {}}, sub_id={"format": "nope", "id": "x"})
    receiver.verifiers[IDP] = _Verifier(unreadable)
    token = "e30.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIn0.sig"  # {"iss": IDP}; verified by the stand-in
    first, again = asyncio.run(receiver.receive(token, "push")), asyncio.run(receiver.receive(token, "push"))
    assert (first.status, first.err) == (again.status, again.err) == ("rejected", "invalid_request")
    assert [r["outcome"] for r in receiver.auditor.records] == ["rejected", "rejected"]
    assert not revocations.refuses(ALICE)
