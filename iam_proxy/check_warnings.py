"""`iam-proxy check` warnings: configurations that pass validation but cannot work for a browser.

Three questions, each answered from the config, the certificate files and (when the config gives
admin access to a Keycloak realm) the IdP itself:

1. Secure cookies on a plain-HTTP listener reached by another name than localhost: the browser
   drops the login cookie, and the callback fails with `login_state_missing`.
2. A callback URL (`<public URL>/.iam/callback`; the callback follows the request's Host) that
   the IdP's client does not list among its redirect URIs: the IdP refuses the login.
3. Back-channel logout with a proxy certificate the IdP cannot verify (self-signed, a dev CA):
   the IdP's call fails (Keycloak logs `PKIX path building failed`) and the session stays valid.

Warnings never fail `check` (exit 0): the same config may be right behind a front proxy.
Question 2 and the "is back-channel logout on" part of 3 need the IdP's client registration,
read with a `keycloak` enricher's service account (realm-management `view-clients`); without
one, `check` says that it skipped them.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from .settings import (KeycloakEnricherSettings, OIDCSessionAuthenticatorSettings, SAMLAuthenticatorSettings,
                       Settings)

CALLBACK = "/.iam/callback"


@dataclass
class Findings:
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # checks that could not be made, and why


def _is_local(host: str) -> bool:
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _uses_sessions(settings: Settings) -> bool:
    return any(isinstance(a, (OIDCSessionAuthenticatorSettings, SAMLAuthenticatorSettings))
               for a in settings.authenticators.values())


def public_urls(settings: Settings, given: list[str]) -> list[str]:
    """The URLs browsers reach the proxy by: as given (`--public-url`), else a SAML SP's base_url, else
    the routes' host names with the listener's scheme, else the listener's own address."""
    if given:
        return [url.rstrip("/") for url in given]
    saml = [a.base_url for a in settings.authenticators.values() if isinstance(a, SAMLAuthenticatorSettings)]
    if saml:
        return saml  # the SAML SP says where browsers reach it
    listener = settings.listeners.proxy
    scheme = "https" if listener.tls else "http"
    hosts = sorted({h for r in settings.routes for h in r.match.hosts if "*" not in h})
    if hosts:
        return [f"{scheme}://{host}" for host in hosts]
    if listener.host in ("0.0.0.0", "::"):
        return []
    host = f"[{listener.host}]" if ":" in listener.host else listener.host
    return [f"{scheme}://{host}:{listener.port}"]


def cookie_warnings(settings: Settings, urls: list[str]) -> list[str]:
    if not _uses_sessions(settings) or not settings.sessions.secure:
        return []
    listener = settings.listeners.proxy
    plain = [u for u in urls if urlsplit(u).scheme == "http" and not _is_local(urlsplit(u).hostname or "")]
    if listener.tls is None and not urls and listener.host in ("0.0.0.0", "::") \
            and not settings.listeners.trusted_proxies:
        plain = [f"http://<any name>:{listener.port}"]
    return [f"sessions.secure: the session and login cookies are Secure, but browsers reach {url} over plain "
            "HTTP and drop them (the callback then fails with login_state_missing). Add listeners.proxy.tls, "
            "put a TLS front proxy before it, or for development only set sessions.secure: false with a "
            "cookie_name without __Host-." for url in plain]


def _system_ca_subjects() -> set[x509.Name]:
    context = ssl.create_default_context()
    subjects = set()
    for der in context.get_ca_certs(binary_form=True):
        try:
            subjects.add(x509.load_der_x509_certificate(der).subject)
        except ValueError:
            continue
    return subjects


def untrusted_certificate(cert_file: Path) -> str | None:
    """Why an IdP with a default trust store cannot verify this chain, or None when it can."""
    try:
        chain = x509.load_pem_x509_certificates(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        return f"cannot read {cert_file}: {exc}"
    top = chain[-1]
    if top.issuer == top.subject and len(chain) == 1:
        return f"{cert_file} is self-signed ({top.subject.rfc4514_string()})"
    trusted = _system_ca_subjects()
    if top.issuer in trusted or top.subject in trusted:
        return None
    return f"{cert_file} is issued by {top.issuer.rfc4514_string()}, which is not in the system trust store"


def _keycloak_admin(settings: Settings, issuer: str) -> KeycloakEnricherSettings | None:
    for enricher in settings.enrichers.values():
        if isinstance(enricher, KeycloakEnricherSettings) and \
                f"{enricher.server_url.rstrip('/')}/realms/{enricher.realm}" == issuer.rstrip("/"):
            return enricher
    return None


def keycloak_client(admin: KeycloakEnricherSettings, client_id: str) -> dict[str, Any] | None:
    """The client's registration, read with the enricher's service account (blocking)."""
    from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

    connection = KeycloakOpenIDConnection(
        server_url=admin.server_url.rstrip("/") + "/", realm_name=admin.realm, user_realm_name=admin.realm,
        client_id=admin.client_id, client_secret_key=admin.client_secret.get_secret_value(),
        timeout=admin.timeout_seconds, verify=True)
    clients = KeycloakAdmin(connection=connection).get_clients()
    return next((c for c in clients if c.get("clientId") == client_id), None)


def redirect_allowed(uri: str, registered: list[str], root_url: str | None) -> bool:
    """Keycloak's matching: exact, or a pattern ending in `*`; relative ones hang off rootUrl."""
    for pattern in registered:
        if pattern.startswith("/") and root_url:
            pattern = root_url.rstrip("/") + pattern
        if pattern == "*" or pattern == uri or (pattern.endswith("*") and uri.startswith(pattern[:-1])):
            return True
    return False


def idp_findings(settings: Settings, urls: list[str], read_client=keycloak_client) -> Findings:
    found = Findings()
    providers = {p.id: p for p in settings.identity_providers}
    used = sorted({pid for a in settings.authenticators.values()
                   if isinstance(a, OIDCSessionAuthenticatorSettings) for pid in a.providers})
    tls = settings.listeners.proxy.tls
    why_untrusted = untrusted_certificate(tls.cert_file) if tls is not None else None
    for pid in used:
        provider = providers[pid]
        client_id = provider.client.client_id if provider.client else ""
        admin = _keycloak_admin(settings, provider.issuer)
        if admin is None:
            found.notes.append(f"provider {pid}: redirect URIs and back-channel logout at the IdP not checked "
                               "(no keycloak enricher with admin access to its realm)")
            if why_untrusted:
                found.warnings.append(f"listeners.proxy.tls.cert_file: if {pid} calls back-channel logout, it "
                                      f"must trust the proxy's certificate: {why_untrusted}")
            continue
        try:
            client = read_client(admin, client_id)
        except Exception as exc:  # noqa: BLE001 - any failure only means the check was not made
            found.notes.append(f"provider {pid}: could not read client {client_id!r} from Keycloak "
                               f"({type(exc).__name__}); needs realm-management view-clients")
            continue
        if client is None:
            found.warnings.append(f"identity_providers: client {client_id!r} does not exist in {provider.issuer}")
            continue
        registered, root = list(client.get("redirectUris") or []), client.get("rootUrl")
        for url in urls:
            if not redirect_allowed(url + CALLBACK, registered, root):
                found.warnings.append(f"provider {pid}: {url}{CALLBACK} is not among client {client_id!r}'s "
                                      f"redirect URIs {registered} (the callback follows the request's Host)")
        backchannel = (client.get("attributes") or {}).get("backchannel.logout.url")
        if backchannel and urlsplit(backchannel).scheme == "https" and why_untrusted:
            found.warnings.append(f"provider {pid}: back-channel logout goes to {backchannel}, and Keycloak must "
                                  f"trust the proxy's certificate: {why_untrusted} (kc.sh --truststore-paths)")
    return found


def check_warnings(settings: Settings, given_urls: list[str]) -> Findings:
    urls = public_urls(settings, given_urls)
    found = idp_findings(settings, urls)
    found.warnings[:0] = cookie_warnings(settings, urls)
    return found
