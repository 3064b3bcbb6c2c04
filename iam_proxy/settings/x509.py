"""Client certificate authenticators and their certificate -> identity mapping rules."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import Model


CERT_TEMPLATE_VARIABLES = frozenset({"value", "cn", "email", "o", "ou", "serial", "fingerprint"})


class CertificateMappingRule(Model):
    """One way to turn a client certificate into an identity; the first rule that applies wins.

    A rule applies when the certificate has a value at `source` that fully matches `pattern` (every
    value counts for SANs). Templates use `{value}`, the pattern's named groups, and `{cn}`, `{email}`,
    `{o}`, `{ou}`, `{serial}`, `{fingerprint}`; a template that renders empty leaves the field unset.
    """

    source: Literal["san_uri", "san_email", "san_dns", "subject_cn", "subject_email", "subject_dn"]
    pattern: str | None = None
    sub: str = "{value}"
    username: str | None = "{cn}"
    email: str | None = "{email}"
    tenant: str | None = None
    groups: list[str] = []

    @model_validator(mode="after")
    def _templates(self) -> "CertificateMappingRule":
        allowed = set(CERT_TEMPLATE_VARIABLES)
        if self.pattern is not None:
            try:
                allowed |= set(re.compile(self.pattern).groupindex)
            except re.error as exc:
                raise ValueError(f"pattern: not a regular expression ({exc})") from None
        templates = {"sub": self.sub, "username": self.username, "email": self.email, "tenant": self.tenant}
        templates.update({f"groups[{i}]": g for i, g in enumerate(self.groups)})
        for field_name, template in templates.items():
            if template is None:
                continue
            try:
                names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
            except ValueError as exc:
                raise ValueError(f"{field_name}: bad template ({exc})") from None
            for name in names:
                if name not in allowed:
                    raise ValueError(f"{field_name}: unknown template variable {{{name}}}")
        return self


DEFAULT_CERT_MAPPING = [
    CertificateMappingRule(source="san_uri", pattern=r"spiffe://.+", username=None),
    CertificateMappingRule(source="san_email"),
    CertificateMappingRule(source="subject_cn"),
]


class X509AuthenticatorSettings(Model):
    type: Literal["x509"]
    # Where a certificate may come from: the proxy's own TLS handshake (listeners.proxy.tls), Envoy's
    # X-Forwarded-Client-Cert, or nginx's ssl-client-cert; headers count only from trusted_proxies.
    sources: list[Literal["tls", "xfcc", "ssl_client_cert"]] = Field(default=["tls"], min_length=1)
    # Forwarded certificates are verified again here (chain, dates, clientAuth EKU, CRLs).
    ca_file: Path | None = None
    crl_file: Path | None = None
    require_client_auth_eku: bool = True
    mapping: list[CertificateMappingRule] = Field(default=DEFAULT_CERT_MAPPING, min_length=1)
    ou_as_groups: bool = False  # subject OU values become groups
    reload_interval_seconds: float = Field(default=5.0, ge=0)  # CA bundle and CRL re-read; 0 = never

    @model_validator(mode="after")
    def _ca_for_headers(self) -> "X509AuthenticatorSettings":
        if set(self.sources) - {"tls"} and self.ca_file is None:
            raise ValueError("ca_file is required to verify certificates forwarded in headers")
        return self
