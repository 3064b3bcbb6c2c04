"""The SAML 2.0 service provider: its IdP's metadata, attribute mapping and replay cache."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ..core.extras import require_program
from .base import Model
from .directory import _is_loopback


class SAMLIdPMetadataSettings(Model):
    """The IdP's metadata: a file or an URL, re-read every refresh_seconds (the last good copy stays)."""

    file: Path | None = None
    url: str | None = None
    # Verify the metadata's enveloped XML signature with this certificate (PEM); unsigned or
    # tampered metadata is refused. Required for http:// URLs other than loopback.
    signing_cert_file: Path | None = None
    entity_id: str | None = None  # which IdP, when the metadata describes several
    refresh_seconds: float = Field(default=3600, gt=0)
    timeout_seconds: float = Field(default=10, gt=0, le=60)
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _one_source(self) -> "SAMLIdPMetadataSettings":
        if (self.file is None) == (self.url is None):
            raise ValueError("set exactly one of file, url")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url: must be an http:// or https:// URL")
            if parts.scheme == "http" and self.signing_cert_file is None and not _is_loopback(parts.hostname):
                raise ValueError("url: plain http metadata needs signing_cert_file (or use https)")
        return self


class SAMLAttributeMapping(Model):
    """SAML attribute names (Name or FriendlyName) per Identity field; see authn/saml/presets.py."""

    sub: list[str] = []  # empty: the NameID
    username: list[str] = []
    email: list[str] = []
    name: list[str] = []
    groups: list[str] = []
    roles: list[str] = []
    tenant: list[str] = []
    attributes: dict[str, str] = {}  # Identity.attributes name -> SAML attribute name


class SAMLReplayCacheSettings(Model):
    """Consumed assertion IDs; "redis" when several replicas share logins (sessions.redis.url)."""

    store: Literal["memory", "redis"] = "memory"
    max_entries: int = Field(default=100_000, ge=100)  # memory store; full = logins refused (503)


class SAMLAuthenticatorSettings(Model):
    """SP-initiated Web SSO: AuthnRequest over HTTP-Redirect, assertions over HTTP-POST to the ACS."""

    type: Literal["saml"]
    # The URL browsers use to reach the proxy; the ACS is base_url + /.iam/saml/acs.
    base_url: str
    entity_id: str | None = None  # default: base_url + /.iam/saml/metadata
    key_file: Path  # the SP's own key and certificate: signed requests, and published in metadata
    cert_file: Path
    idp: SAMLIdPMetadataSettings
    preset: Literal["generic", "keycloak", "entra", "adfs", "okta", "shibboleth"] = "generic"
    mapping: SAMLAttributeMapping | None = None  # lists set here replace the preset's
    sign_requests: bool = True  # AuthnRequest and LogoutRequest
    signature_algorithm: Literal["rsa-sha256", "rsa-sha384", "rsa-sha512"] = "rsa-sha256"
    want_assertions_signed: bool = True
    want_response_signed: bool = False
    name_id_format: str | None = None  # e.g. urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress
    allow_idp_initiated: bool = False  # unsolicited responses (no InResponseTo); off: refused
    clock_skew_seconds: int = Field(default=60, ge=0, le=600)
    login_timeout_seconds: int = Field(default=600, ge=30, le=3600)
    replay_cache: SAMLReplayCacheSettings = SAMLReplayCacheSettings()
    post_logout_path: str = "/"  # where the browser lands after Single Logout

    @field_validator("type")
    @classmethod
    def _xmlsec1_installed(cls, value: str) -> str:
        require_program("xmlsec1", "xmlsec1")  # pysaml2 verifies and signs XML through it
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+$", value.rstrip("/")):
            raise ValueError("must be an http:// or https:// URL without a path")
        return value.rstrip("/")

    @field_validator("post_logout_path")
    @classmethod
    def _local_path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//"):
            raise ValueError("must be a path on the proxy, starting with a single '/'")
        return value

    @model_validator(mode="after")
    def _signed_somewhere(self) -> "SAMLAuthenticatorSettings":
        if not self.want_assertions_signed and not self.want_response_signed:
            raise ValueError("want_assertions_signed: at least one of the assertion or the response must be signed")
        return self

    @property
    def sp_entity_id(self) -> str:
        return self.entity_id or self.base_url + "/.iam/saml/metadata"
