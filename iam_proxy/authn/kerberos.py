"""Kerberos through SPNEGO over HTTP (RFC 4559 `Authorization: Negotiate`, RFC 4178 SPNEGO, RFC 4121).

One round trip: the client's token is accepted against the keytab (python-gssapi, MIT krb5), the
initiator principal becomes the identity (realm -> tenant), and the acceptor's mutual-authentication
token goes back in `WWW-Authenticate: Negotiate <token>` on the response. NTLM, raw or wrapped in
SPNEGO, is refused (`ntlm_not_supported`): it offers no mutual authentication and is relayable.
GSSAPI calls can block (keytab and replay-cache I/O), so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time

import gssapi

from ..context import RequestContext
from ..core.errors import AuthUnavailable, InvalidCredential
from ..core.identity import Identity
from ..settings.authn import KerberosAuthenticatorSettings
from .base import authorization_credentials

log = logging.getLogger("iam_proxy.authn.kerberos")

SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
_NTLMSSP = b"NTLMSSP\x00"
# DER-encoded mechanism OIDs as they appear in a SPNEGO NegTokenInit's mechTypes
_NTLM_OID_DER = bytes.fromhex("06 0a 2b 06 01 04 01 82 37 02 02 0a")
_KRB5_OID_DERS = (bytes.fromhex("06 09 2a 86 48 86 f7 12 01 02 02"),  # krb5
                  bytes.fromhex("06 09 2a 86 48 82 f7 12 01 02 02"))  # Microsoft's krb5


def negotiate_token(ctx: RequestContext, max_bytes: int) -> bytes | None:
    """The decoded token of `Authorization: Negotiate`, None when the header is absent or another scheme."""
    token = authorization_credentials(ctx, "negotiate")
    if token is None:
        return None
    if not token:
        raise InvalidCredential("negotiate_token_malformed", message="The Negotiate token is empty.")
    if len(token) > max_bytes:
        raise InvalidCredential("negotiate_token_too_large", message="The Negotiate token is too large.")
    try:
        return base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCredential("negotiate_token_malformed", message="The Negotiate token is not base64.") from None


def is_ntlm(token: bytes) -> bool:
    """Raw NTLMSSP, or a SPNEGO offer whose only mechanisms are NTLM."""
    if token.startswith(_NTLMSSP):
        return True
    head = token[:256]
    return _NTLM_OID_DER in head and not any(oid in head for oid in _KRB5_OID_DERS)


class KerberosAuthenticator:
    challenge = "Negotiate"

    def __init__(self, name: str, settings: KerberosAuthenticatorSettings) -> None:
        self.name = name
        self.settings = settings
        self._store = {b"keytab": f"FILE:{settings.keytab}".encode()}
        self._service = (gssapi.Name(settings.service_principal, gssapi.NameType.kerberos_principal)
                         if settings.service_principal else None)
        self._realms = {r.upper() for r in settings.realms}

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        token = negotiate_token(ctx, self.settings.max_token_bytes)
        if token is None:
            return None
        if is_ntlm(token):
            raise InvalidCredential("ntlm_not_supported", message="NTLM is not accepted; use Kerberos.")
        principal, lifetime, reply = await asyncio.to_thread(self._accept, token)
        identity = self._identity(principal, lifetime)
        if reply:
            ctx.response_headers["www-authenticate"] = "Negotiate " + base64.b64encode(reply).decode("ascii")
        return identity

    def _credentials(self) -> gssapi.Credentials:
        # Acquired per request: cheap, and a rotated keytab is picked up at once.
        try:
            return gssapi.Credentials(name=self._service, usage="accept", store=self._store)
        except gssapi.exceptions.GSSError as exc:
            raise AuthUnavailable("keytab_unavailable", detail=f"{self.settings.keytab}: {exc.gen_message()}") from None

    def _accept(self, token: bytes) -> tuple[str, int | None, bytes | None]:
        creds = self._credentials()
        acceptor = gssapi.SecurityContext(creds=creds, usage="accept")
        try:
            # python-gssapi may return SPNEGO's reject token and raise the error on the next access,
            # so every read of the context stays inside this block.
            reply = acceptor.step(token)
            if not acceptor.complete:
                raise InvalidCredential("negotiate_incomplete",
                                        message="Only single round trip Kerberos negotiation is supported.")
            if acceptor.mech != gssapi.MechType.kerberos:
                raise InvalidCredential("negotiate_mechanism_not_supported", message="Only Kerberos is accepted.")
            principal = str(acceptor.initiator_name)
            lifetime = acceptor.lifetime
        except gssapi.exceptions.GSSError as exc:
            # the minor status names the cause (replay, clock skew, wrong key...): for the log only
            log.info("Negotiate token refused: %s", exc.gen_message())
            raise InvalidCredential("negotiate_failed", message="The Kerberos token was not accepted.",
                                    detail=exc.gen_message()) from None
        return principal, lifetime, reply

    def _identity(self, principal: str, lifetime: int | None) -> Identity:
        user, sep, realm = principal.rpartition("@")
        if not sep or not user or not realm:
            raise InvalidCredential("principal_malformed", message="The Kerberos principal is malformed.")
        if self._realms and realm.upper() not in self._realms:
            raise InvalidCredential("realm_not_allowed", message="The Kerberos realm is not accepted here.",
                                    detail=f"realm {realm}")
        now = int(time.time())
        return Identity(
            sub=principal, method="kerberos", iss=f"krb5:{realm}",
            username=user if self.settings.strip_realm else principal,
            tenant=self.settings.realm_tenants.get(realm, realm),
            auth_time=now, amr=("kerberos",),
            expires_at=now + lifetime if lifetime else None,
            attributes={"principal": principal, "realm": realm},
        )
