"""Subject identifiers (RFC 9493) against identities, and the revocation rule (issued at or before)."""

from __future__ import annotations

import pytest

from iam_proxy.core.identity import Identity
from iam_proxy.signals.revocations import Revocations
from iam_proxy.signals.subjects import SubjectError, identity_keys, read_subject

ALICE = Identity(sub="u-1", method="jwt", iss="https://idp", email="Alice@Example.org", username="alice",
                 issued_at=1000)


@pytest.mark.parametrize("subject, matches", [
    ({"format": "iss_sub", "iss": "https://idp", "sub": "u-1"}, True),
    ({"format": "iss_sub", "iss": "https://other", "sub": "u-1"}, False),
    ({"format": "email", "email": "alice@example.ORG"}, True),
    ({"format": "account", "uri": "acct:alice"}, True),
    ({"format": "opaque", "id": "u-1"}, True),
    ({"format": "opaque", "id": "u-2"}, False),
    ({"format": "uri", "uri": "u-1"}, True),
    ({"format": "phone_number", "phone_number": "+15551234"}, False),
    ({"format": "aliases", "identifiers": [{"format": "opaque", "id": "zz"}, {"format": "email", "email": "alice@example.org"}]}, True),
    ({"user": {"format": "iss_sub", "iss": "https://idp", "sub": "u-1"}, "session": {"format": "opaque", "id": "s-9"}}, True),
    # SSF 1.0 final names the format (Keycloak 26.7's session-revoked); the drafts did not
    ({"format": "complex", "user": {"format": "iss_sub", "iss": "https://idp", "sub": "u-1"},
      "session": {"format": "opaque", "id": "s-9"}}, True),
])
def test_formats(subject, matches):
    assert bool(read_subject(subject).keys & identity_keys(ALICE)) is matches


@pytest.mark.parametrize("tagged", [{}, {"format": "complex"}])
def test_complex_subject_names_the_session(tagged):
    subject = read_subject({**tagged, "user": {"format": "opaque", "id": "u-1"},
                            "session": {"format": "opaque", "id": "s-9"}})
    assert subject.session_ids == {"s-9"} and subject.subs == {"u-1"}


@pytest.mark.parametrize("subject", [
    "alice", {"format": "iss_sub", "iss": "https://idp"}, {"format": "nope", "id": "x"},
    {"format": "aliases", "identifiers": []}, {"device": {"format": "opaque", "id": "d"}},
    {"format": "complex", "device": {"format": "opaque", "id": "d"}}])
def test_unreadable_subjects_are_refused(subject):
    with pytest.raises(SubjectError):
        read_subject(subject)


def test_credentials_issued_at_or_before_the_event_are_refused_until_reissued():
    now = [1200.0]
    revocations = Revocations(ttl_seconds=600, clock=lambda: now[0])
    revocations.revoke(read_subject({"format": "email", "email": "alice@example.org"}).keys, at=1000.0)
    assert revocations.refuses(ALICE)  # iat == event time: issued before the user could react
    assert not revocations.refuses(Identity(**{**_fields(ALICE), "issued_at": 1001}))
    # a token without `iat` cannot show it was issued after the event; a client certificate has no issue time
    assert revocations.refuses(Identity(**{**_fields(ALICE), "issued_at": None}))
    assert not revocations.refuses(Identity(**{**_fields(ALICE), "issued_at": None, "method": "x509"}))
    assert not revocations.refuses(Identity(sub="bob", method="jwt", issued_at=10))
    now[0] = 1000.0 + 601
    assert not revocations.refuses(ALICE)  # remembered for revocation_ttl_seconds


def _fields(identity: Identity) -> dict:
    return {name: getattr(identity, name) for name in identity.__slots__}
