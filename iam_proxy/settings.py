"""Typed, validated settings: one YAML file, `${ENV}` interpolation, secrets that never print.

`load_settings(path)` returns a frozen `Settings` or raises `ConfigError` naming the exact key path
(`routes[1].upstream: ...`), which the CLI turns into exit code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .audit.config import AuditSettings, AuditSinkSettings, FileSink, StdoutSink  # noqa: F401 (re-exported)
from .errors import ConfigError
from .extras import require_module, require_program
from .listener.limits import ListenerLimits
from .ratelimit.config import RateLimitSettings
from .replay.shadow_settings import ShadowPolicySettings
from .signals.settings import SignalsSettings
from .validators import http_url

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- listeners


class TLSSettings(_Model):
    cert_file: Path
    key_file: Path
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: str | None = None  # OpenSSL cipher string for TLS 1.2 (1.3 suites are OpenSSL's defaults)
    # Client certificates: "optional" asks for one, "required" refuses the handshake without one.
    # A certificate that is presented must verify (chain to client_ca_file, in date, not revoked).
    client_auth: Literal["none", "optional", "required"] = "none"
    client_ca_file: Path | None = None
    crl_file: Path | None = None  # PEM CRLs; when set, every issuing CA must have a current CRL
    crl_check: Literal["leaf", "chain"] = "leaf"
    # Certificate, key, CA bundle and CRLs are re-read when they change; 0 = never.
    reload_interval_seconds: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _client_ca(self) -> "TLSSettings":
        if self.client_auth != "none" and self.client_ca_file is None:
            raise ValueError("client_ca_file is required when client_auth is not 'none'")
        if self.crl_file is not None and self.client_auth == "none":
            raise ValueError("crl_file needs client_auth 'optional' or 'required'")
        return self


class Listener(_Model):
    host: str = "127.0.0.1"  # the address to bind; 0.0.0.0 or :: for every interface
    port: int = Field(ge=0, le=65535)
    tls: TLSSettings | None = None  # HTTPS; without it the listener speaks plain HTTP


class Listeners(_Model):
    proxy: Listener = Listener(port=8080)
    admin: Listener = Listener(port=9090)
    # Peers whose X-Forwarded-* headers are believed; everyone else's are replaced.
    trusted_proxies: list[str] = []
    # Proxy processes sharing the proxy port (SO_REUSEPORT); one per core. See workers.py.
    workers: int = Field(default=1, ge=1, le=64)
    # On SIGTERM: how long in-flight requests get to finish once the proxy listener stops accepting
    # (then they are cut); the audit spool drains after (audit.spool.shutdown_drain_seconds).
    shutdown_grace_seconds: float = Field(default=20.0, gt=0, le=3600)
    # deadlines and sizes a client must keep to, on both listeners (listener/limits.py)
    limits: ListenerLimits = ListenerLimits()

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @model_validator(mode="after")
    def _workers_need_a_port(self) -> "Listeners":
        if self.workers > 1 and self.proxy.port == 0:
            raise ValueError("workers > 1 needs a fixed listeners.proxy.port (not 0)")
        return self


# ---------------------------------------------------------------- identity providers


class ClaimMapping(_Model):
    """Where each Identity field comes from in a token's claims (dotted paths)."""

    sub: str = "sub"
    username: str | None = "preferred_username"
    email: str | None = "email"
    name: str | None = "name"
    groups: list[str] = ["groups"]
    roles: list[str] = ["roles"]
    scopes: list[str] = ["scope", "scp"]
    tenant: str | None = None
    # Identity.attributes gets these claims verbatim (name -> claim path).
    attributes: dict[str, str] = {}
    # A token carrying any of these claims is refused (`claims_incomplete`): for example Entra ID's
    # `_claim_names.groups`, which says the group list was too long and was left out.
    reject_if_present: list[str] = []


class ClaimPreset(_Model):
    """Fills a provider's `claims` for a known IdP (see iam_proxy/authn/presets.py and docs/idp/)."""

    name: Literal["keycloak", "entra-id", "okta", "auth0", "ping"]
    client_id: str | None = None  # keycloak: also read resource_access.<client_id>.roles
    namespace: str | None = None  # auth0: the custom-claim namespace, e.g. "https://example.com/"
    token_version: Literal["v1", "v2"] = "v2"  # entra-id: v1 tokens name the user in `upn`
    groups_overage: Literal["deny", "ignore"] = "deny"  # entra-id: refuse, or go on without groups


class OIDCClientSettings(_Model):
    """This proxy as an OIDC relying party of the provider (browser sign-in, introspection)."""

    client_id: str
    client_secret: SecretStr | None = None  # None: a public client (PKCE only)
    display_name: str | None = None  # shown on the sign-in chooser


class JWTProvider(_Model):
    id: str
    issuer: str
    discovery: bool = False
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    audiences: list[str] = Field(min_length=1)
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "ES256", "ES384", "ES512", "EdDSA"]] = ["RS256"]
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    require_exp: bool = True
    # A token living longer than this (exp minus iat/nbf, or minus now) is refused: token_lifetime_too_long.
    max_token_lifetime_seconds: int = Field(default=86400, ge=60)
    claims: ClaimMapping = ClaimMapping()
    preset: ClaimPreset | None = None  # fills `claims` (which must then be left out)
    client: OIDCClientSettings | None = None
    jwks_refresh_seconds: float = Field(default=300, gt=0)
    jwks_min_refetch_seconds: float = Field(default=10, ge=0)
    http_timeout_seconds: float = Field(default=5, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            if "claims" in data:
                raise ValueError("set preset or claims, not both")
            from .authn.presets import preset_claims

            data = {**data, "claims": preset_claims(data["preset"])}
        return data

    @model_validator(mode="after")
    def _one_key_source(self) -> "JWTProvider":
        sources = [self.discovery, self.jwks_uri is not None, self.jwks_file is not None]
        if sum(bool(s) for s in sources) != 1:
            raise ValueError("set exactly one of discovery, jwks_uri, jwks_file")
        return self


# ---------------------------------------------------------------- authenticators


class JWTAuthenticatorSettings(_Model):
    type: Literal["jwt"]
    providers: list[str] = Field(min_length=1)
    header: str = "authorization"
    # Token digest -> verified identity, bounded by the token's own exp.
    cache_entries: int = Field(default=10_000, ge=0)


class AnonymousAuthenticatorSettings(_Model):
    type: Literal["anonymous"]
    subject: str = "anonymous"


CERT_TEMPLATE_VARIABLES = frozenset({"value", "cn", "email", "o", "ou", "serial", "fingerprint"})


class CertificateMappingRule(_Model):
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


class X509AuthenticatorSettings(_Model):
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


class KerberosAuthenticatorSettings(_Model):
    type: Literal["kerberos"]
    keytab: Path
    # The acceptor principal, e.g. HTTP/proxy.example.org@EXAMPLE.ORG; None = any key in the keytab.
    service_principal: str | None = None
    realms: list[str] = []  # client realms accepted; empty = any realm the KDC vouches for
    realm_tenants: dict[str, str] = {}  # realm -> Identity.tenant; other realms map to themselves
    strip_realm: bool = True  # Identity.username without "@REALM"
    max_token_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)

    @field_validator("type")
    @classmethod
    def _gssapi_installed(cls, value: str) -> str:
        require_module("gssapi", "kerberos")
        return value


# ---------------------------------------------------------------- LDAP / Active Directory


class LdapGroupSettings(_Model):
    """Where a user's groups come from, and how they are named in Identity.groups."""

    # member_of: the user entry's memberOf (OpenLDAP memberof or dynlist overlay, Active Directory);
    # member: groups under base_dn listing the user's DN (groupOfNames/member,
    #   groupOfUniqueNames/uniqueMember, AD group/member); member_uid: posixGroup/memberUid = login name.
    sources: list[Literal["member_of", "member", "member_uid"]] = Field(default=["member_of"], min_length=1)
    base_dn: str | None = None
    # none: direct groups only; walk: also the groups those groups belong to, searched level by level
    # (any server, bounded by max_depth); ad_in_chain: Active Directory resolves the whole chain in one
    # search (LDAP_MATCHING_RULE_IN_CHAIN, 1.2.840.113556.1.4.1941).
    nested: Literal["none", "walk", "ad_in_chain"] = "none"
    max_depth: int = Field(default=8, ge=1, le=32)
    name: Literal["cn", "dn"] = "cn"  # cn: the value of the group DN's first RDN
    max_groups: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _base_dn(self) -> "LdapGroupSettings":
        searches = set(self.sources) - {"member_of"} or self.nested != "none"
        if searches and not self.base_dn:
            raise ValueError("base_dn is required for the member and member_uid sources and nested groups")
        return self


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LdapDirectory(_Model):
    """One LDAP directory (OpenLDAP, Active Directory, ...), shared by the ldap authenticator and enricher."""

    id: str
    # Tried in order (failover): ldaps://host:636, or ldap://host:389 upgraded with StartTLS.
    urls: list[str] = Field(min_length=1)
    start_tls: bool = True  # for ldap:// URLs
    ca_file: Path | None = None  # the directory's CA bundle; None = the system trust store
    tls_server_name: str | None = None  # the name the server certificate must carry, if not the URL's host
    # Only for tests against a directory on this machine: ldap:// without StartTLS (passwords in clear).
    allow_cleartext_on_loopback: bool = False
    # The service account that searches for users and groups; none = anonymous search.
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    user_base_dn: str
    # `{username}` is replaced by the login name, escaped as RFC 4515 requires.
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    user_scope: Literal["subtree", "one"] = "subtree"
    username_attribute: str = "uid"
    email_attribute: str | None = "mail"
    name_attribute: str | None = "cn"
    attributes: dict[str, str] = {}  # Identity.attributes name -> LDAP attribute
    groups: LdapGroupSettings = LdapGroupSettings()
    connect_timeout_seconds: float = Field(default=3, gt=0, le=60)
    timeout_seconds: int = Field(default=5, ge=1, le=120)  # per LDAP operation (ldap3 takes whole seconds)
    deadline_seconds: float = Field(default=10, gt=0, le=300)  # one whole login or lookup, queueing included
    pool_size: int = Field(default=8, ge=1, le=128)  # pooled connections, and concurrent operations
    server_retry_seconds: float = Field(default=30, ge=0)  # a failed server is skipped this long

    @field_validator("urls")
    @classmethod
    def _ldap_urls(cls, value: list[str]) -> list[str]:
        for i, url in enumerate(value):
            if not re.match(r"^ldaps?://[^/\s]+/?$", url):
                raise ValueError(f"[{i}]: must look like ldaps://host[:port] or ldap://host[:port]")
        return value

    @field_validator("user_filter")
    @classmethod
    def _has_username(cls, value: str) -> str:
        if "{username}" not in value or not (value.startswith("(") and value.endswith(")")):
            raise ValueError("must be a parenthesized LDAP filter containing {username}")
        return value

    @model_validator(mode="after")
    def _transport(self) -> "LdapDirectory":
        if (self.bind_dn is None) != (self.bind_password is None):
            raise ValueError("set both bind_dn and bind_password, or neither (anonymous search)")
        for i, url in enumerate(self.urls):
            if url.startswith("ldap://") and not self.start_tls:
                host = urlsplit(url).hostname or ""
                if not self.allow_cleartext_on_loopback or not _is_loopback(host):
                    raise ValueError(f"urls[{i}]: ldap:// without start_tls sends passwords in clear; use "
                                     "ldaps:// or start_tls (allow_cleartext_on_loopback is for 127.0.0.1 only)")
        return self


class LdapAuthenticatorSettings(_Model):
    """HTTP Basic credentials checked by binding to an LDAP directory as the user."""

    type: Literal["ldap"]
    directory: str
    realm: str = "iam-proxy"  # WWW-Authenticate: Basic realm="..."
    # Verified (username, password) pairs are remembered this long, and refused ones too, so a client
    # retrying a wrong password does not reach the directory (or an AD lockout counter) every time.
    cache_ttl_seconds: float = Field(default=60, ge=0, le=3600)
    negative_cache_ttl_seconds: float = Field(default=10, ge=0, le=600)
    cache_entries: int = Field(default=10_000, ge=0)
    max_username_length: int = Field(default=256, ge=1, le=1024)


class LdapEnricherSettings(_Model):
    """Adds directory groups to an identity another authenticator produced (a JWT, a certificate)."""

    type: Literal["ldap"]
    directory: str
    # The identity field that finds the directory entry; cert_subject is the client certificate's DN.
    key: Literal["sub", "username", "email", "cert_subject"] = "username"
    # filter: search with `filter` (`{value}` = the key, escaped); dn: the key is the entry's DN.
    lookup: Literal["filter", "dn"] = "filter"
    filter: str | None = None  # default: the directory's user_filter with the key as {username}
    methods: list[str] = []  # identity methods to enrich (jwt, x509, ...); empty = all but anonymous
    # true: an identity with no directory entry is refused (401 user_not_in_directory).
    require_entry: bool = False
    cache_ttl_seconds: float = Field(default=60, ge=0, le=3600)
    cache_entries: int = Field(default=10_000, ge=0)

    @field_validator("filter")
    @classmethod
    def _has_value(cls, value: str | None) -> str | None:
        if value is not None and ("{value}" not in value or not value.startswith("(")):
            raise ValueError("must be a parenthesized LDAP filter containing {value}")
        return value


# ---------------------------------------------------------------- API keys


class ApiKeyAuthenticatorSettings(_Model):
    """API keys from a key file managed by `iam-proxy apikey`; only HMAC-SHA256(pepper, key) is stored."""

    type: Literal["apikey"]
    file: Path
    pepper: SecretStr = Field(min_length=16)  # e.g. "${IAM_PROXY_APIKEY_PEPPER}"
    header: str = "X-API-Key"
    # With a scheme, the header value must be "<scheme> <key>" (e.g. header Authorization, scheme
    # ApiKey); a value with another scheme is left to the route's other authenticators.
    scheme: str | None = None
    reload_interval_seconds: float = Field(default=2.0, ge=0)  # key file re-read when it changes; 0 = never

    @model_validator(mode="after")
    def _scheme_on_authorization(self) -> "ApiKeyAuthenticatorSettings":
        if self.header.lower() == "authorization" and not self.scheme:
            raise ValueError("header Authorization needs a scheme (e.g. ApiKey), or Bearer and Basic "
                             "credentials would be read as API keys")
        return self


class KeycloakEnricherSettings(_Model):
    """Adds what Keycloak knows but the token may not carry: full group paths and effective
    (composite) roles, read with python-keycloak as a service-account client."""

    type: Literal["keycloak"]
    server_url: str  # e.g. https://sso.example.org (without /realms/...)
    realm: str
    client_id: str  # a confidential client whose service account has realm-management view-users
    client_secret: SecretStr
    providers: list[str] = []  # enrich identities from these identity providers only; empty = any
    group_paths: bool = True  # add groups as full paths (/org/finance) next to the token's names
    realm_roles: bool = True  # add effective realm roles, composites expanded
    client_roles: list[str] = []  # client ids whose effective roles are added as "<client>:<role>"
    cache_ttl_seconds: float = Field(default=60, ge=0, le=3600)
    cache_entries: int = Field(default=10_000, ge=0)
    timeout_seconds: float = Field(default=5, gt=0, le=60)


EnricherSettings = Annotated[Union[LdapEnricherSettings, KeycloakEnricherSettings], Field(discriminator="type")]


class OIDCSessionAuthenticatorSettings(_Model):
    """Browser sign-in (authorization code + PKCE) and the session cookie it leaves behind."""

    type: Literal["oidc_session"]
    providers: list[str] = Field(min_length=1)  # more than one: the user picks on /.iam/login
    scopes: list[str] = ["openid", "profile", "email"]
    # Where the IdP may send the browser after logout (absolute URLs); empty: /.iam/signed-out.
    post_logout_redirect_uris: list[str] = []
    refresh_after_seconds: float = Field(default=300, gt=0)  # re-read identity from the IdP this often
    refresh_before_expiry_seconds: float = Field(default=30, ge=0)
    login_timeout_seconds: int = Field(default=600, ge=30, le=3600)  # state/nonce lifetime


class IntrospectionAuthenticatorSettings(_Model):
    """Opaque bearer tokens checked at the provider's RFC 7662 endpoint (client from provider.client)."""

    type: Literal["introspection"]
    provider: str
    endpoint: str | None = None  # default: the discovery document's introspection_endpoint
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    header: str = "authorization"
    audiences: list[str] = []  # when set, `aud` must name one of them
    client_ids: list[str] = []  # when set, `client_id` must be one of them
    token_types: list[str] = ["bearer", "access_token"]  # `token_type`, when present, must be one
    cache_ttl_seconds: float = Field(default=60, ge=0, le=3600)  # never beyond the token's exp
    cache_entries: int = Field(default=10_000, ge=0)
    timeout_seconds: float = Field(default=3, gt=0, le=30)


# ---------------------------------------------------------------- SAML 2.0 service provider


class SAMLIdPMetadataSettings(_Model):
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


class SAMLAttributeMapping(_Model):
    """SAML attribute names (Name or FriendlyName) per Identity field; see authn/saml/presets.py."""

    sub: list[str] = []  # empty: the NameID
    username: list[str] = []
    email: list[str] = []
    name: list[str] = []
    groups: list[str] = []
    roles: list[str] = []
    tenant: list[str] = []
    attributes: dict[str, str] = {}  # Identity.attributes name -> SAML attribute name


class SAMLReplayCacheSettings(_Model):
    """Consumed assertion IDs; "redis" when several replicas share logins (sessions.redis.url)."""

    store: Literal["memory", "redis"] = "memory"
    max_entries: int = Field(default=100_000, ge=100)  # memory store; full = logins refused (503)


class SAMLAuthenticatorSettings(_Model):
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


AuthenticatorSettings = Annotated[
    Union[JWTAuthenticatorSettings, AnonymousAuthenticatorSettings, X509AuthenticatorSettings,
          KerberosAuthenticatorSettings, LdapAuthenticatorSettings, ApiKeyAuthenticatorSettings,
          OIDCSessionAuthenticatorSettings, IntrospectionAuthenticatorSettings, SAMLAuthenticatorSettings],
    Field(discriminator="type"),
]


# ---------------------------------------------------------------- routes


class RouteMatch(_Model):
    hosts: list[str] = []  # exact names or "*.example.com"; empty = any host
    # A glob over the decoded path: "*" is one segment, "**" any number of segments.
    path: str = "/**"
    methods: list[str] = []  # empty = any method

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [m.upper() for m in value]


class RoutePolicy(_Model):
    # The decision path, as in OPA: "iam/authz/decision" or "envoy/authz/allow".
    path: str = "iam/authz/decision"
    dry_run: bool = False
    # "embedded", "opa-wasm" or "opa"; unset = policy.engine.
    engine: Literal["embedded", "opa-wasm", "opa"] | None = None
    # Cache this route's decisions (see policy.cache). Unset: on for the embedded engine, whose
    # revision the proxy controls; true is refused for engine "opa".
    cache: bool | None = None
    # A candidate policy evaluated beside this one, after the response (docs/policies.md, shadow policies).
    shadow: ShadowPolicySettings | None = None

    @field_validator("path")
    @classmethod
    def _slashes(cls, value: str) -> str:
        value = value.strip("/").replace(".", "/")
        if value.startswith("data/"):
            value = value[len("data/"):]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", value):
            raise ValueError("must look like 'package/path/rule'")
        return value


class Route(_Model):
    id: str
    match: RouteMatch = RouteMatch()
    upstream: str
    authenticators: list[str] = Field(min_length=1)
    enrichers: list[str] = []  # run in order after authentication (see the top-level `enrichers`)
    policy: RoutePolicy = RoutePolicy()
    timeout_seconds: float = Field(default=30, gt=0)
    connect_timeout_seconds: float = Field(default=5, gt=0)
    preserve_host: bool = False
    # Removed from the path sent upstream when the path starts with it as whole segments
    # ("/api" turns "/api/v1" into "/v1", and leaves "/apiv2" alone).
    strip_prefix: str | None = None
    labels: dict[str, str] = {}
    # The client's Authorization header stays at the proxy unless this is true.
    pass_authorization: bool = False
    # Send the verified access token upstream in identity_headers.access_token (oauth2-proxy's
    # pass_access_token): the bearer token, or the browser session's access token.
    pass_access_token: bool = False
    # Method-override headers (X-HTTP-Method-Override, ...) are dropped unless this is true; then the
    # policy decides on the overridden method, and the header is forwarded.
    method_override: bool = False
    # The `aud` of the X-Iam-Assertion sent to this route's upstream (default: the route id).
    assertion_audience: str | None = None

    _http_url = field_validator("upstream")(http_url)

    @field_validator("strip_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or "//" in value:
            raise ValueError("must be a path starting with '/'")
        return value.rstrip("/") or None


# ---------------------------------------------------------------- policy, headers, audit


class OpaServerSettings(_Model):
    """A remote OPA server, asked over its REST data API (`POST /v1/data/<path>`)."""

    url: str  # base URL, e.g. http://127.0.0.1:8181
    timeout_seconds: float = Field(default=0.25, gt=0, le=30)  # per decision, queueing included
    max_concurrency: int = Field(default=64, ge=1)  # decisions in flight; more wait (within the timeout)
    max_connections: int = Field(default=32, ge=1)  # pooled keep-alive connections
    token: SecretStr | None = None  # sent as `Authorization: Bearer` (opa run --authentication=token)
    health_interval_seconds: float = Field(default=2.0, gt=0)

    _http_url = field_validator("url")(http_url)


class DecisionCacheSettings(_Model):
    """Sizes the decision cache (on by default for routes on the embedded engine; `policy.cache`)."""

    max_entries: int = Field(default=10_000, ge=1)
    ttl_seconds: float = Field(default=10.0, gt=0)
    # Request headers left out of the cache key (they change per request but never decide).
    volatile_headers: list[str] = ["x-request-id", "traceparent", "tracestate", "x-b3-traceid",
                                   "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-amzn-trace-id"]

    @field_validator("volatile_headers")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [h.lower() for h in value]


class BundleVerificationSettings(_Model):
    """Check `.signatures.json` as OPA does; an unsigned or tampered bundle is refused."""

    algorithm: Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                       "ES256", "ES384", "ES512", "HS256", "HS384", "HS512"] = "RS256"
    public_key_file: Path | None = None  # PEM public key or certificate (RS*, PS*, ES*)
    secret: SecretStr | None = None  # shared secret (HS*)
    key_id: str = "default"  # must match the signature's keyid (`opa build --signing-key`'s default)
    scope: str | None = None  # must equal the signature's scope when set
    exclude_files: list[str] = []  # glob patterns of files that need not be signed

    @model_validator(mode="after")
    def _one_key(self) -> "BundleVerificationSettings":
        if self.algorithm.startswith("HS"):
            if self.secret is None or self.public_key_file is not None:
                raise ValueError(f"{self.algorithm} needs secret (and no public_key_file)")
        elif self.public_key_file is None or self.secret is not None:
            raise ValueError(f"{self.algorithm} needs public_key_file (and no secret)")
        return self


class BundleSettings(_Model):
    """An OPA bundle (.tar.gz with .manifest, data.json, *.rego) from a file or an HTTP URL."""

    file: Path | None = None
    url: str | None = None
    poll_interval_seconds: float = Field(default=30.0, gt=0)  # URL polling (with If-None-Match)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    verification: BundleVerificationSettings | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "BundleSettings":
        if (self.file is None) == (self.url is None):
            raise ValueError("set exactly one of file, url")
        if self.url is not None and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError("url must be an http:// or https:// URL")
        return self


class DecisionLogSettings(_Model):
    """OPA-compatible decision-log events (EventV1), one JSON object per line."""

    path: Path


class PolicySettings(_Model):
    engine: Literal["embedded", "opa-wasm", "opa"] = "embedded"
    dir: Path = Path("policies")
    bundle: BundleSettings | None = None  # replaces dir as the embedded engine's source
    reload_interval_seconds: float = Field(default=1.0, ge=0)  # 0 = no reload
    opa: OpaServerSettings | None = None
    cache: DecisionCacheSettings = DecisionCacheSettings()
    decision_log: DecisionLogSettings | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "PolicySettings":
        if self.bundle is not None and "dir" in self.model_fields_set:
            raise ValueError("set dir or bundle, not both")
        return self


class AssertionSettings(_Model):
    header: str = "X-Iam-Assertion"
    key_file: Path | None = None  # PEM, EC P-256; an ephemeral key is made when absent
    issuer: str = "iam-proxy"
    ttl_seconds: int = Field(default=60, ge=5, le=3600)


class IdentityHeaders(_Model):
    user: str = "X-Forwarded-User"
    email: str = "X-Forwarded-Email"
    groups: str = "X-Forwarded-Groups"
    preferred_username: str = "X-Forwarded-Preferred-Username"
    # Sent only on routes with pass_access_token: the bearer token (or the session's access token).
    access_token: str = "X-Forwarded-Access-Token"
    # Inbound headers to strip besides the built-in identity families (iam_proxy/header_safety.py):
    # exact names, or "prefix*"; compared case-insensitively with `_` and `.` read as `-`.
    spoofable: list[str] = []
    # Inbound header names containing `_` or `.` are dropped (as nginx does): backends that map headers
    # to variables read them as the `-` name. true keeps them (the spoof list still applies).
    keep_underscored_names: bool = False
    assertion: AssertionSettings = AssertionSettings()

    @field_validator("user", "email", "groups", "preferred_username", "access_token")
    @classmethod
    def _token(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]+", value):
            raise ValueError("must be a header name of letters, digits and '-'")
        return value


class ForwardAuthSettings(_Model):
    """`/.iam/auth` for nginx auth_request, Traefik forwardAuth and Caddy forward_auth (deployment.md)."""

    # The front proxies that may ask (CIDRs); everyone else gets 404, and only their X-Original-* and
    # X-Forwarded-* description of the request is believed. Empty: forward-auth is off.
    trusted_peers: list[str] = []
    # true: a forward-auth deployment; the proxy listener answers /.iam/ and forwards nothing.
    only: bool = False

    _cidrs = field_validator("trusted_peers")(lambda cls, value: Listeners._cidrs(value))

    @model_validator(mode="after")
    def _only_needs_peers(self) -> "ForwardAuthSettings":
        if self.only and not self.trusted_peers:
            raise ValueError("only: forward-auth only needs trusted_peers (the front proxies that ask)")
        return self


class ExtAuthzSettings(_Model):
    """Envoy external authorization (docs/envoy.md): the gRPC `Authorization/Check` service and
    Envoy's HTTP mode, each on a listener of its own; either, both, or neither (the default)."""

    grpc: Listener | None = None
    http: Listener | None = None
    # The Envoys that may ask (CIDRs): an allowed answer carries a signed identity, so nobody else
    # gets one. Required when a listener is set.
    trusted_peers: list[str] = []
    # HTTP mode: Envoy's http_service.path_prefix, removed from each check's path.
    path_prefix: str = ""

    _cidrs = field_validator("trusted_peers")(lambda cls, value: Listeners._cidrs(value))

    @model_validator(mode="after")
    def _consistent(self) -> "ExtAuthzSettings":
        if (self.grpc or self.http) and not self.trusted_peers:
            raise ValueError("trusted_peers: ext_authz needs the Envoys that may ask (CIDRs)")
        if self.path_prefix and (not self.path_prefix.startswith("/") or self.path_prefix.endswith("/")):
            raise ValueError("path_prefix: must start with '/' and not end with '/' (or be empty)")
        tls = self.grpc.tls if self.grpc is not None else None
        if tls is not None and (tls.crl_file is not None or tls.client_auth == "optional"):
            raise ValueError("grpc.tls: the gRPC listener takes client_auth 'none' or 'required', without crl_file")
        return self


class WebSocketSettings(_Model):
    """Proxied websockets (iam_proxy/forward/websocket.py; docs/configuration.md, "Websockets")."""

    # An open socket is decided again this often, so a revoked session or key, or a policy that no
    # longer allows it, closes it (code 1008); the identity's own expiry closes it on time.
    recheck_seconds: float = Field(default=30, gt=0, le=3600)


class RedisSessionStoreSettings(_Model):
    """Redis shared by replicas: sessions (store "redis"), ended sessions, one-time login values."""

    url: str = "redis://127.0.0.1:6379/0"  # redis:// or rediss:// (TLS), with the database number
    key_prefix: str = "iam-proxy:"  # every key starts with it; give each proxy deployment its own
    timeout_seconds: float = Field(default=1.0, gt=0, le=30)  # per Redis call; past it: 503
    password: SecretStr | None = None  # or in the URL; prefer ${ENV} interpolation


class SessionSettings(_Model):
    """Browser sessions (iam_proxy/session/): a sealed cookie, or a ticket into Redis."""

    # "cookie": the session is sealed into the cookie; "redis": the cookie holds a ticket into Redis.
    store: Literal["cookie", "redis"] = "cookie"
    # 32+ characters; older secrets still open cookies they sealed (rotation without logging all out).
    secret: SecretStr | None = None
    previous_secrets: list[SecretStr] = []  # older secrets that still open cookies (rotation)
    cookie_name: str = "__Host-iam_session"  # __Host- cookies need `secure` and are bound to the host
    # Secure cookies are only sent over HTTPS: false only for plain-HTTP development, with a
    # cookie_name without __Host- (`iam-proxy check` warns when a plain-HTTP listener keeps it true).
    secure: bool = True
    lifetime_seconds: int = Field(default=8 * 3600, ge=60)  # absolute; sign in again after this
    redis: RedisSessionStoreSettings | None = None  # needed by store "redis"; with "cookie", holds ended sessions
    # Ended sessions (logout, back-channel logout) when there is no `redis`: shared by the workers of
    # one host and kept across restarts. Give each proxy on a host its own file (or share Redis).
    revocation_file: Path = Path("var/state/revoked-sessions.jsonl")

    @model_validator(mode="after")
    def _consistent(self) -> "SessionSettings":
        if self.secret is not None and len(self.secret.get_secret_value()) < 32:
            raise ValueError("secret: must be at least 32 characters")
        if self.cookie_name.startswith("__Host-") and not self.secure:
            raise ValueError("cookie_name: a __Host- cookie must be secure")
        if self.store == "redis" and self.redis is None:
            raise ValueError("redis: store 'redis' needs redis.url")
        return self


class Settings(_Model):
    listeners: Listeners = Listeners()  # the proxy and admin listeners, workers, trusted front proxies
    identity_providers: list[JWTProvider] = []  # OIDC/OAuth issuers: keys, audiences, claim mapping, client
    authenticators: dict[str, AuthenticatorSettings]  # named; routes list the ones they accept, in order
    directories: list[LdapDirectory] = []  # LDAP / Active Directory servers for the ldap plugins
    enrichers: dict[str, EnricherSettings] = {}  # named; add groups or roles after authentication
    routes: list[Route] = Field(min_length=1)  # exactly one must match each request
    policy: PolicySettings = PolicySettings()  # the Rego policies and the engine that evaluates them
    identity_headers: IdentityHeaders = IdentityHeaders()  # what the upstream receives about the caller
    forward_auth: ForwardAuthSettings = ForwardAuthSettings()  # /.iam/auth for nginx, Traefik, Envoy
    ext_authz: ExtAuthzSettings = ExtAuthzSettings()  # Envoy external authorization (envoy.md)
    websockets: WebSocketSettings = WebSocketSettings()  # proxied websockets: how often an open one is re-decided
    audit: AuditSettings = AuditSettings()  # one event per request: sinks, spool, hash chain
    sessions: SessionSettings = SessionSettings()  # browser sessions (oidc_session, saml)
    rate_limits: RateLimitSettings = RateLimitSettings()  # requests per client and route (rate-limiting.md)
    signals: SignalsSettings | None = None  # OpenID Shared Signals receiver (signals.md)
    # Secrets are wrapped so that printing the settings never shows them.
    secrets: dict[str, SecretStr] = {}

    @model_validator(mode="after")
    def _references(self) -> "Settings":
        provider_ids = [p.id for p in self.identity_providers]
        _unique(provider_ids, "identity_providers", "id")
        _unique([r.id for r in self.routes], "routes", "id")
        for name, auth in self.authenticators.items():
            if isinstance(auth, JWTAuthenticatorSettings):
                for i, pid in enumerate(auth.providers):
                    if pid not in provider_ids:
                        raise ValueError(
                            f"authenticators.{name}.providers[{i}]: unknown identity provider {pid!r}"
                        )
        directory_ids = [d.id for d in self.directories]
        _unique(directory_ids, "directories", "id")
        for section, plugins in (("authenticators", self.authenticators), ("enrichers", self.enrichers)):
            for name, plugin in plugins.items():
                if isinstance(plugin, (LdapAuthenticatorSettings, LdapEnricherSettings)) \
                        and plugin.directory not in directory_ids:
                    raise ValueError(f"{section}.{name}.directory: unknown directory {plugin.directory!r}")
        _check_interactive_logins(self)
        if self.signals is not None and self.listeners.workers > 1 and self.signals.state_file is None:
            raise ValueError("signals.state_file: listeners.workers > 1 needs a file the workers share revocations in")
        _check_saml(self)
        _check_rate_limit_routes(self)
        for i, route in enumerate(self.routes):
            for j, auth_name in enumerate(route.authenticators):
                if auth_name not in self.authenticators:
                    raise ValueError(
                        f"routes[{i}].authenticators[{j}]: unknown authenticator {auth_name!r}"
                    )
            for j, enricher_name in enumerate(route.enrichers):
                if enricher_name not in self.enrichers:
                    raise ValueError(f"routes[{i}].enrichers[{j}]: unknown enricher {enricher_name!r}")
            engine = route.policy.engine or self.policy.engine
            if engine == "opa" and self.policy.opa is None:
                raise ValueError(f"routes[{i}].policy.engine: engine 'opa' needs policy.opa.url")
            if engine == "opa" and route.policy.cache is True:
                raise ValueError(f"routes[{i}].policy.cache: the decision cache needs a policy revision "
                                 "the proxy controls; it is not available with engine 'opa'")
        return self

    def engine_for(self, route: Route) -> str:
        return route.policy.engine or self.policy.engine

    def caches_decisions(self, route: Route) -> bool:
        if route.policy.cache is not None:
            return route.policy.cache
        return self.engine_for(route) in ("embedded", "opa-wasm")


def _check_saml(settings: "Settings") -> None:
    """SAML logins live in the browser session; a shared replay cache needs the sessions' Redis."""
    names = [n for n, a in settings.authenticators.items() if isinstance(a, SAMLAuthenticatorSettings)]
    if len(names) > 1:
        raise ValueError(f"authenticators.{names[1]}: one saml authenticator per proxy (its ACS is /.iam/saml/acs)")
    for name, auth in settings.authenticators.items():
        if isinstance(auth, SAMLAuthenticatorSettings):
            if settings.sessions.secret is None:
                raise ValueError(f"sessions.secret: authenticator {name!r} (saml) needs a session secret")
            if auth.replay_cache.store == "redis" and settings.sessions.redis is None:
                raise ValueError(f"authenticators.{name}.replay_cache.store: 'redis' needs sessions.redis.url")


def _check_rate_limit_routes(settings: "Settings") -> None:
    route_ids = {r.id for r in settings.routes}
    for where, limit in settings.rate_limits.all_limits():
        for j, route_id in enumerate(limit.routes):
            if route_id not in route_ids:
                raise ValueError(f"rate_limits.{where}.routes[{j}]: unknown route {route_id!r}")


def _check_interactive_logins(settings: "Settings") -> None:
    """oidc_session and introspection name providers that exist and have a client; sessions have a key."""
    providers = {p.id: p for p in settings.identity_providers}
    index = {pid: i for i, pid in enumerate(providers)}
    for name, auth in settings.authenticators.items():
        if isinstance(auth, OIDCSessionAuthenticatorSettings):
            for i, pid in enumerate(auth.providers):
                if pid not in providers:
                    raise ValueError(f"authenticators.{name}.providers[{i}]: unknown identity provider {pid!r}")
                if providers[pid].client is None:
                    raise ValueError(f"identity_providers[{index[pid]}].client: provider {pid!r} is used "
                                     "for browser sign-in and needs a client")
            if settings.sessions.secret is None:
                raise ValueError(f"sessions.secret: authenticator {name!r} (oidc_session) needs a session secret")
        if isinstance(auth, IntrospectionAuthenticatorSettings):
            provider = providers.get(auth.provider)
            if provider is None:
                raise ValueError(f"authenticators.{name}.provider: unknown identity provider {auth.provider!r}")
            if provider.client is None or provider.client.client_secret is None:
                raise ValueError(f"identity_providers[{index[auth.provider]}].client: introspection needs "
                                 "a confidential client (client_id and client_secret)")


def _unique(values: list[str], section: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{section}[{i}].{key}: duplicate {value!r}")
        seen.add(value)


# ---------------------------------------------------------------- loading


def interpolate_env(node: Any, path: str = "", environ: dict[str, str] | None = None) -> Any:
    """Replace `${NAME}` and `${NAME:-default}` in every string; a missing variable is an error."""
    env = os.environ if environ is None else environ
    if isinstance(node, dict):
        return {k: interpolate_env(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_env(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _ENV_REF.sub(substitute, node)
    return node


def _error_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("jwt", "anonymous", "x509", "kerberos", "ldap", "apikey", "file", "stdout", "syslog", "http",
                      "oidc_session", "introspection", "saml", "keycloak") and out:
            continue  # discriminated-union tags add noise to the path
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_settings(raw: Any) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError("<root>: the config must be a mapping")
    raw = interpolate_env(raw)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _error_path(tuple(first["loc"])) or "<root>"
        message = first["msg"].removeprefix("Value error, ")
        cross_checked = ("routes", "authenticators", "identity_providers", "directories", "enrichers",
                         "sessions", "audit", "rate_limits")
        if ": " in message and message.split(": ", 1)[0].startswith(cross_checked):
            where, message = message.split(": ", 1)
        raise ConfigError(f"{where}: {message}") from None


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_settings(raw)
