"""Subject identifiers for security events (RFC 9493), and the keys an identity is known by.

A subject is turned into keys; an identity yields its own keys; they match when the sets meet:

    iss_sub       {"iss", "sub"}        ("iss_sub", iss, sub)
    opaque        {"id"}                ("sub", id)
    email         {"email"}             ("email", lower-case address)
    account       {"uri": "acct:..."}   ("email", address) and ("username", address)
    uri / did     {"uri"} / {"url"}     ("sub", value)
    aliases       {"identifiers": [...]} the keys of each
    phone_number  {"phone_number"}      ("phone", number)

SSF's complex subjects (`{"format": "complex", "user": {...}, "session": {...}, ...}`; the drafts
left `format` out, and both shapes are read) are read for their `user`, and a `session` (opaque)
names the identity provider's session to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.identity import Identity

Key = tuple[str, ...]


class SubjectError(ValueError):
    """The subject identifier is not one this receiver can read."""


def _text(subject: dict[str, Any], name: str) -> str:
    value = subject.get(name)
    if not isinstance(value, str) or not value:
        raise SubjectError(f"format {subject.get('format')!r} needs a string {name!r}")
    return value


def simple_keys(subject: Any) -> set[Key]:
    if not isinstance(subject, dict):
        raise SubjectError("a subject identifier is a JSON object")
    kind = subject.get("format")
    if kind == "iss_sub":
        return {("iss_sub", _text(subject, "iss"), _text(subject, "sub"))}
    if kind == "opaque":
        return {("sub", _text(subject, "id"))}
    if kind == "email":
        return {("email", _text(subject, "email").lower())}
    if kind == "account":
        address = _text(subject, "uri").removeprefix("acct:").lower()
        return {("email", address), ("username", address)}
    if kind == "uri":
        return {("sub", _text(subject, "uri"))}
    if kind == "did":
        return {("sub", _text(subject, "url"))}
    if kind == "phone_number":
        return {("phone", _text(subject, "phone_number"))}
    if kind == "aliases":
        identifiers = subject.get("identifiers")
        if not isinstance(identifiers, list) or not identifiers:
            raise SubjectError("format 'aliases' needs a list of identifiers")
        return {key for identifier in identifiers for key in simple_keys(identifier)}
    raise SubjectError(f"unknown subject format {kind!r}")


@dataclass(frozen=True)
class Subject:
    keys: frozenset[Key]
    session_ids: frozenset[str] = frozenset()  # the IdP session(s) named by a complex subject
    described: dict[str, Any] = field(default_factory=dict)  # for the audit event's `identity`

    @property
    def subs(self) -> set[str]:
        """The subject values an identity's `sub` could hold (iss_sub's sub, opaque ids, URIs)."""
        return {key[-1] for key in self.keys if key[0] in ("iss_sub", "sub")}


def read_subject(subject: Any) -> Subject:
    if isinstance(subject, dict) and subject.get("format", "complex") == "complex":  # SSF complex subject
        if not isinstance(subject.get("user"), dict):
            raise SubjectError("a complex subject without a user is not a subject this receiver acts on")
        session = subject.get("session")
        session_ids = (frozenset({_text(session, "id")})
                       if isinstance(session, dict) and session.get("format") == "opaque" else frozenset())
        return Subject(frozenset(simple_keys(subject["user"])), session_ids, _describe(subject["user"]))
    return Subject(frozenset(simple_keys(subject)), frozenset(), _describe(subject))


def _describe(subject: dict[str, Any]) -> dict[str, Any]:
    """The subject as an audit event's `identity`, so per-sink privacy rules (subject, email) apply."""
    described = {"sub": subject.get("sub") or subject.get("id") or subject.get("uri") or subject.get("url"),
                 "iss": subject.get("iss"), "email": subject.get("email"), "format": subject.get("format")}
    return {k: v for k, v in described.items() if v is not None}


def identity_keys(identity: Identity) -> set[Key]:
    keys: set[Key] = {("sub", identity.sub)}
    if identity.iss:
        keys.add(("iss_sub", identity.iss, identity.sub))
    if identity.email:
        keys.add(("email", identity.email.lower()))
    if identity.username:
        keys.add(("username", identity.username.lower()))
    return keys
