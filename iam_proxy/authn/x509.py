"""X.509 client certificates (RFC 5280), from the proxy's own TLS handshake or from a trusted front proxy.

Where a certificate comes from, in this order:
  1. `xfcc`: Envoy's `X-Forwarded-Client-Cert` (the last element, the one our peer added; needs
     `set_current_client_cert_details: {cert: true}`), and `ssl_client_cert`: nginx's
     `$ssl_client_escaped_cert` in an `ssl-client-cert` header. Believed only from
     `listeners.trusted_proxies`; from anyone else the header is ignored (and the forwarder strips it);
  2. `tls`: the chain our own handshake verified (`listeners.proxy.tls.client_auth`).
A front proxy's own mTLS certificate therefore never hides the end client's forwarded one.

Checks: forwarded certificates are always verified again against `ca_file` (chain, dates, CRLs);
certificates from our handshake are too when `ca_file` is set (so one route can trust fewer CAs than
the listener). The leaf must carry the clientAuth extended key usage unless that check is turned off.
The identity comes from the first mapping rule that applies (settings.CertificateMappingRule).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from ..context import RequestContext
from ..core.cache import ExpiringCache
from ..core.claims import first
from ..core.errors import ConfigError, InvalidCredential
from ..core.files import WatchedFiles
from ..core.identity import Identity
from ..core.networks import TrustedNetworks
from ..settings.x509 import CertificateMappingRule, X509AuthenticatorSettings
from .x509_forwarded import (MAX_HEADER_BYTES, NGINX_HEADER, XFCC_HEADER, chain_from_nginx, chain_from_xfcc,
                             der_sha256, malformed_header)

log = logging.getLogger("iam_proxy.authn.x509")

# A verified certificate is trusted this long without re-checking (a CRL going stale is noticed then).
VERIFIED_TTL_SECONDS = 300


# ---------------------------------------------------------------- verification


class ChainVerifier:
    """Chain to the CA bundle, dates, and CRLs, re-reading the files when they change."""

    def __init__(self, ca_file: Path, crl_file: Path | None, reload_interval: float, where: str,
                 clock=time.time) -> None:
        self.ca_file, self.crl_file = ca_file, crl_file
        self.reload_interval = reload_interval
        self._where = where
        self._clock = clock
        self._files = WatchedFiles([p for p in (ca_file, crl_file) if p is not None], reload_interval)
        self.generation = -1  # bumped by every load, so cached verifications from older files die
        try:
            self._load()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot load the CA bundle or CRLs ({exc})") from None

    def _load(self) -> None:
        stamp = self._files.current()
        anchors = x509.load_pem_x509_certificates(self.ca_file.read_bytes())
        crls: list[x509.CertificateRevocationList] = []
        if self.crl_file is not None:
            crls = _load_crls(self.crl_file.read_bytes())
        self._store = Store(anchors)
        self._crls = crls
        self._files.accept(stamp)
        self.generation += 1

    def reload_if_changed(self) -> None:
        if self._files.changed() is None:
            return
        try:
            self._load()
            log.warning("%s: CA bundle or CRLs reloaded", self._where)
        except (OSError, ValueError) as exc:
            log.warning("%s: CA bundle or CRLs changed but could not be loaded, keeping the previous ones: %s",
                        self._where, exc)

    def verify(self, chain: list[x509.Certificate]) -> None:
        now = dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc)
        leaf, intermediates = chain[0], chain[1:]
        _check_dates(leaf, now)
        verifier = (PolicyBuilder().store(self._store).time(now)
                    # enterprise client certificates often lack SANs: the leaf's profile is ours to check
                    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                        ee_policy=ExtensionPolicy.permit_all())
                    .build_client_verifier())
        try:
            verified = verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            raise InvalidCredential("certificate_untrusted", message="The client certificate is not trusted.",
                                    detail=str(exc)) from None
        if self.crl_file is not None:
            self._check_revocation(verified.chain, now)

    def _check_revocation(self, chain: list[x509.Certificate], now: dt.datetime) -> None:
        """Every certificate below the trust anchor needs a current, correctly signed CRL from its issuer."""
        for cert, issuer in zip(chain, chain[1:]):
            crl = next((c for c in self._crls if c.issuer == issuer.subject
                        and c.is_signature_valid(issuer.public_key())), None)  # type: ignore[arg-type]
            next_update = crl.next_update_utc if crl is not None else None
            if crl is None or (next_update is not None and next_update < now):
                raise InvalidCredential("certificate_revocation_unknown",
                                        message="The client certificate's revocation status is unknown.",
                                        detail=f"no current CRL for {issuer.subject.rfc4514_string()}")
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise InvalidCredential("certificate_revoked", message="The client certificate has been revoked.")


def _load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    blocks = re.findall(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", data, re.S)
    if not blocks:
        raise ValueError("no PEM CRL found")
    return [x509.load_pem_x509_crl(block) for block in blocks]


def _check_dates(cert: x509.Certificate, now: dt.datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise InvalidCredential("certificate_expired", message="The client certificate has expired.")
    if now < cert.not_valid_before_utc:
        raise InvalidCredential("certificate_not_yet_valid", message="The client certificate is not valid yet.")


def _check_client_auth_eku(cert: x509.Certificate) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise InvalidCredential("certificate_wrong_usage",
                                message="The client certificate is not meant for client authentication.")


# ---------------------------------------------------------------- identity mapping


@dataclass(frozen=True)
class CertificateFacts:
    """What mapping rules, Identity.cert and templates read from a certificate."""

    subject_dn: str
    issuer_dn: str
    serial: str
    fingerprint: str
    cn: list[str]
    o: list[str]
    ou: list[str]
    subject_email: list[str]
    san_dns: list[str]
    san_email: list[str]
    san_uri: list[str]
    san_ip: list[str]
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> "CertificateFacts":
        def attrs(oid) -> list[str]:
            return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]

        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = x509.SubjectAlternativeName([])
        return cls(
            subject_dn=cert.subject.rfc4514_string(),
            issuer_dn=cert.issuer.rfc4514_string(),
            serial=format(cert.serial_number, "x"),
            fingerprint=der_sha256(cert),
            cn=attrs(NameOID.COMMON_NAME), o=attrs(NameOID.ORGANIZATION_NAME),
            ou=attrs(NameOID.ORGANIZATIONAL_UNIT_NAME), subject_email=attrs(NameOID.EMAIL_ADDRESS),
            san_dns=san.get_values_for_type(x509.DNSName),
            san_email=san.get_values_for_type(x509.RFC822Name),
            san_uri=san.get_values_for_type(x509.UniformResourceIdentifier),
            san_ip=[str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        )

    def values(self, source: str) -> list[str]:
        if source == "subject_dn":
            return [self.subject_dn]
        if source == "subject_cn":
            return self.cn
        return list(getattr(self, source))

    def variables(self) -> dict[str, str]:
        emails = self.san_email or self.subject_email
        return {"cn": first(self.cn) or "", "email": first(emails) or "", "o": first(self.o) or "",
                "ou": first(self.ou) or "", "serial": self.serial, "fingerprint": self.fingerprint}

    def as_identity_cert(self) -> dict[str, Any]:
        return {
            "subject": self.subject_dn, "issuer": self.issuer_dn, "serial": self.serial,
            "fingerprint": self.fingerprint,
            "sans": {"dns": self.san_dns, "email": self.san_email, "uri": self.san_uri, "ip": self.san_ip},
            "not_before": self.not_before.isoformat().replace("+00:00", "Z"),
            "not_after": self.not_after.isoformat().replace("+00:00", "Z"),
        }


def _render(template: str | None, variables: dict[str, str]) -> str | None:
    if template is None:
        return None
    return template.format_map(variables) or None


def map_identity(facts: CertificateFacts, rules: list[CertificateMappingRule], ou_as_groups: bool) -> Identity:
    base = facts.variables()
    for rule in rules:
        pattern = re.compile(rule.pattern) if rule.pattern is not None else None
        for value in facts.values(rule.source):
            match = pattern.fullmatch(value) if pattern is not None else None
            if pattern is not None and match is None:
                continue
            variables = {**base, "value": value}
            if match is not None:
                variables.update({k: v or "" for k, v in match.groupdict().items()})
            sub = _render(rule.sub, variables)
            if not sub:
                continue
            groups = [g for g in (_render(t, variables) for t in rule.groups) if g]
            if ou_as_groups:
                groups += [ou for ou in facts.ou if ou not in groups]
            spiffe = [u for u in facts.san_uri if u.startswith("spiffe://")]
            return Identity(
                sub=sub, method="x509", iss=facts.issuer_dn,
                username=_render(rule.username, variables), email=_render(rule.email, variables),
                name=first(facts.cn), groups=tuple(groups), tenant=_render(rule.tenant, variables),
                expires_at=int(facts.not_after.timestamp()),
                attributes={"spiffe_id": spiffe[0]} if spiffe else {},
                cert=facts.as_identity_cert(),
            )
    raise InvalidCredential("certificate_unmapped", message="No identity is configured for this certificate.",
                            detail=f"no mapping rule applies to {facts.subject_dn}")


# ---------------------------------------------------------------- the authenticator


class X509Authenticator:
    challenge = None  # a certificate is asked for in the TLS handshake, not in WWW-Authenticate

    def __init__(self, name: str, settings: X509AuthenticatorSettings, trusted_proxies: list[str],
                 clock=time.time) -> None:
        self.name = name
        self.settings = settings
        self._trusted = TrustedNetworks(trusted_proxies)
        self._clock = clock
        # certificate text -> (identity, PEM chain, verifier generation): parsing and verifying a chain
        # costs milliseconds, and a client sends the same certificate on every request; entries die with
        # the certificate and whenever the CA bundle or CRLs are reloaded
        self._cache: ExpiringCache[bytes, tuple[Identity, list[str], int]] = ExpiringCache(10_000, clock=clock)
        self._verifier = None
        if settings.ca_file is not None:
            self._verifier = ChainVerifier(settings.ca_file, settings.crl_file, settings.reload_interval_seconds,
                                           where=f"authenticators.{name}.ca_file", clock=clock)

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        found = self._find(ctx)
        if found is None:
            return None
        source, text, parse = found
        if self._verifier is not None:
            self._verifier.reload_if_changed()
        generation = self._verifier.generation if self._verifier is not None else 0
        key = hashlib.sha256(f"{source}\0{text}".encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[2] == generation:
            identity, pem_chain, _ = cached
        else:
            chain = parse(text)
            identity = self._verify_and_map(chain)
            pem_chain = [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain]
            expires = min(chain[0].not_valid_after_utc.timestamp(), now + VERIFIED_TTL_SECONDS)
            self._cache.put_until(key, (identity, pem_chain, generation), expires)
        if source != "tls":
            ctx.client_cert_chain = pem_chain  # verified: the policy may see it as source.certificate
        return identity

    def _verify_and_map(self, chain: list[x509.Certificate]) -> Identity:
        leaf = chain[0]
        if self._verifier is not None:
            self._verifier.verify(chain)
        else:
            _check_dates(leaf, dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc))  # the handshake did the rest
        if self.settings.require_client_auth_eku:
            _check_client_auth_eku(leaf)
        return map_identity(CertificateFacts.of(leaf), self.settings.mapping, self.settings.ou_as_groups)

    def _find(self, ctx: RequestContext):
        """(source, certificate text, parser) of the certificate this request carries, or None."""
        forwarded = self._forwarded(ctx)
        if forwarded is not None:
            return forwarded
        if "tls" in self.settings.sources and ctx.client_cert_chain:
            return "tls", "".join(ctx.client_cert_chain), _chain_from_tls
        return None

    def _forwarded(self, ctx: RequestContext):
        parsers = {"xfcc": (XFCC_HEADER, chain_from_xfcc), "ssl_client_cert": (NGINX_HEADER, chain_from_nginx)}
        for source in self.settings.sources:
            if source not in parsers:
                continue
            header, parse = parsers[source]
            value = ctx.headers.get(header)
            if value is None:
                continue
            if ctx.peer not in self._trusted:
                log.warning("request %s: ignoring %s from untrusted peer %s", ctx.decision_id, header, ctx.peer)
                continue
            if len(value) > MAX_HEADER_BYTES:
                raise malformed_header(f"{header}: too large")
            return source, value, parse
        return None


def _chain_from_tls(text: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(text.encode("ascii"))
    except ValueError:
        raise InvalidCredential("certificate_malformed", message="The client certificate is malformed.") from None
