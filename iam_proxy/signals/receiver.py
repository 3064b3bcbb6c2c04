"""One Security Event Token in, by push or poll: verify it, act on it once, audit it.

    verify (tokens.py) -> first time this (iss, jti)? -> for each event: read its subject, act -> audit

Revoking events (session-revoked, account-disabled, credential-compromise, ...) record the subject in
Revocations (the guard then refuses its credentials issued before the event), end its browser
sessions, and drop what is cached about it: introspection results, enrichment, cached decisions.
Refreshing events (token-claims-change, assurance-level-change, credential-change) drop the cached
lookups only, so the next request enriches afresh. Every SET, accepted or not, is one audit event
(`"kind": "signal"`); its subject is the event's `identity`, so sink privacy rules apply to it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..audit.auditor import AuditRecordError
from ..audit.event import LABELS
from ..core.errors import AuthUnavailable
from ..settings.signals import SignalsSettings
from . import REFRESHING, REVOKING
from .revocations import Revocations
from .subjects import Subject, SubjectError, identity_keys, read_subject
from .tokens import SetRejected, SetVerifier, SecurityEventToken, unverified_issuer

log = logging.getLogger("iam_proxy.signals")


@dataclass
class Caches:
    """What the proxy holds about subjects, and how to end it (built by app.py from its parts)."""

    sessions: Any = None  # SessionManager
    session_providers: dict[str, str | None] = field(default_factory=dict)  # provider id -> its issuer
    introspection: list[Any] = field(default_factory=list)  # authenticators with forget(match)
    enrichers: list[Any] = field(default_factory=list)  # enrichers with forget(subs)
    decision_cache: Any = None  # DecisionCache


@dataclass
class Outcome:
    status: str  # accepted | duplicate | rejected | unavailable
    err: str = ""  # RFC 8935 error code, when rejected
    description: str = ""


class Receiver:
    def __init__(self, settings: SignalsSettings, revocations: Revocations, caches: Caches, auditor: Any,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.revocations = revocations
        self.caches = caches
        self.auditor = auditor
        self.verifiers: dict[str, SetVerifier] = {}  # issuer -> verifier, once the transmitter is set up
        self._issuers = {t.issuer for t in settings.transmitters}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._clock = clock

    async def receive(self, token: str, delivery: str) -> Outcome:
        issuer = None
        try:
            issuer = unverified_issuer(token)
            verifier = self.verifiers.get(issuer or "")
            if verifier is None:
                if issuer in self._issuers:
                    return self._defer(None, delivery, "transmitter_not_ready", "the transmitter is not set up yet")
                raise SetRejected("invalid_issuer", "set_issuer_unknown", "no transmitter with this issuer")
            event = await verifier.verify(token)
        except SetRejected as exc:
            self.audit(None, delivery, "rejected", exc.reason, {"err": exc.err, "iss": issuer})
            return Outcome("rejected", exc.err, exc.description)
        except AuthUnavailable:
            return self._defer(None, delivery, "transmitter_keys_unavailable", "the transmitter's keys cannot be fetched")
        key = (event.iss, event.jti)
        if key in self._seen:
            self.audit(event, delivery, "duplicate", "set_duplicate", {})
            return Outcome("duplicate")
        self._remember(key)
        try:
            actions = await self._act(event)
        except SubjectError as exc:
            self._seen.pop(key, None)  # not acted on: a resend is refused again, not answered as a duplicate
            self.audit(event, delivery, "rejected", "set_subject_unreadable", {"err": "invalid_request"})
            return Outcome("rejected", "invalid_request", str(exc))
        except Exception:  # noqa: BLE001 - e.g. the session store is down: the revocation holds, the rest is retried
            log.exception("security event %s was not acted on completely", event.jti)
            self._seen.pop(key, None)  # the transmitter's retry is acted on again, not taken as a duplicate
            return self._defer(event, delivery, "set_action_failed", "the event could not be acted on; retry")
        self.audit(event, delivery, "accepted", _reason(event), actions)
        return Outcome("accepted")

    def _defer(self, event: SecurityEventToken | None, delivery: str, reason: str, description: str) -> Outcome:
        """Not refused, not done: a push is answered 503 and a polled SET is left unacknowledged."""
        self.audit(event, delivery, "deferred", reason, {})
        return Outcome("unavailable", "", description)

    def _remember(self, key: tuple[str, str]) -> None:
        self._seen[key] = None
        while len(self._seen) > self.settings.jti_cache_entries:
            self._seen.popitem(last=False)

    # ------------------------------------------------------------------ acting

    async def _act(self, event: SecurityEventToken) -> dict[str, Any]:
        done: dict[str, Any] = {"revoked": 0, "refreshed": 0, "ignored": [], "sessions_ended": 0,
                                "introspection_dropped": 0, "enrichment_dropped": 0, "decisions_dropped": 0}
        for event_type, payload in event.events.items():
            if event_type not in REVOKING | REFRESHING:
                done["ignored"].append(event_type)
                continue
            subject = read_subject(payload.get("subject", event.sub_id))
            self._forget(subject, done)
            if event_type in REVOKING:
                at = payload.get("event_timestamp")
                at = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else event.iat
                self.revocations.revoke(subject.keys, at)
                done["sessions_ended"] += await self._end_sessions(subject)
                done["revoked"] += 1
            else:
                done["refreshed"] += 1
        return done

    def _forget(self, subject: Subject, done: dict[str, Any]) -> None:
        def match(identity: Any) -> bool:
            return bool(identity_keys(identity) & subject.keys)

        for authenticator in self.caches.introspection:
            done["introspection_dropped"] += authenticator.forget(match)
        for enricher in self.caches.enrichers:
            done["enrichment_dropped"] += enricher.forget(subject.subs)
        if self.caches.decision_cache is not None:
            # keyed by a digest of the input: every entry goes, which includes this subject's
            done["decisions_dropped"] += self.caches.decision_cache.clear()

    async def _end_sessions(self, subject: Subject) -> int:
        sessions = self.caches.sessions
        if sessions is None:
            return 0
        ended = 0
        for provider, issuer in self.caches.session_providers.items():
            for session_id in subject.session_ids:
                ended += await sessions.end_idp_session(provider, idp_session_id=session_id)
            for key in subject.keys:
                if key[0] == "sub" or key[0] == "iss_sub" and key[1] == issuer:
                    ended += await sessions.end_idp_session(provider, sub=key[-1])
        return ended

    # ------------------------------------------------------------------ audit

    def audit(self, event: SecurityEventToken | None, delivery: str, outcome: str, reason: str,
               details: dict[str, Any]) -> None:
        identity = None
        if event is not None:
            first = next(iter(event.events.values()))
            try:
                identity = read_subject(first.get("subject", event.sub_id)).described
            except SubjectError:
                identity = None
        record = {
            "kind": "signal", "decision_id": str(uuid.uuid4()),
            "timestamp": datetime.fromtimestamp(self._clock(), timezone.utc).isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "outcome": outcome, "reason": reason, "identity": identity,
            # a SET refused before it was verified has only what its sender claims (`iss`, in details)
            "signal": {"delivery": delivery, "transmitter": event.transmitter if event else None,
                       "iss": event.iss if event else None, "jti": event.jti if event else None,
                       "events": sorted(event.events) if event else [], "txn": event.txn if event else None,
                       **details},
            "labels": LABELS,
        }
        try:
            self.auditor.record(record)
        except AuditRecordError as exc:
            log.error("security event %s not recorded in the audit trail: %s", event.jti if event else "-", exc)
        log.info("security event %s from %s: %s (%s)", event.jti if event else "-", delivery, outcome, reason)


def _reason(event: SecurityEventToken) -> str:
    """The short names of the events, e.g. `session-revoked`."""
    return ",".join(sorted(t.rsplit("/", 1)[-1] for t in event.events))
