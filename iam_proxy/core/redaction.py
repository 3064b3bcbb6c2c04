"""Credential masking for everything that leaves the process: audit events, decision logs, error
logs, `explain` reports and library log records. The one place that knows what a secret looks like.

- Headers: the well-known credential headers, plus every header this deployment's config reads a
  credential from (a JWT or introspection `header`, an API-key `header`; `configure`). Cookies are
  masked whole, Authorization keeps its scheme so an auditor can tell Bearer from Basic.
- Query parameters that carry credentials, wherever a URL appears: the query string, the input's
  `path`, and headers that carry a URL (`X-Original-URI`, `X-Forwarded-Uri`, `Referer`, ...).
- Log text: bearer/basic credentials, anything shaped like a JWT, credential query parameters,
  long base64 runs; and SAML documents that pysaml2 logs when a response fails its checks.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable

MASK = "***"

SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token",
    "x-amz-security-token", "x-iam-assertion", "x-forwarded-access-token",
})
SECRET_QUERY = frozenset({
    "access_token", "id_token", "refresh_token", "token", "code", "client_secret", "password",
    "samlresponse", "samlrequest", "api_key", "apikey", "logout_token", "assertion", "ticket",
})
# Headers whose value is a URL (with a query that may carry a credential).
URL_HEADERS = frozenset({"x-original-uri", "x-forwarded-uri", "x-original-url", "x-rewrite-url", "referer"})

# Credential headers named in this deployment's config, registered at startup (`configure`) and by
# the authenticators that read them.
_configured_secret_headers: set[str] = set()


def register_secret_header(name: str) -> None:
    _configured_secret_headers.add(name.lower())


def configure(header_names: Iterable[str]) -> None:
    """Every header the config reads a credential from (called once, when the proxy is built)."""
    for name in header_names:
        register_secret_header(name)


def is_secret_header(name: str) -> bool:
    return name in SECRET_HEADERS or name in _configured_secret_headers


def mask_authorization(value: str) -> str:
    """Keep the scheme so an auditor can tell Bearer from Basic from Negotiate."""
    scheme, sep, _ = value.partition(" ")
    return f"{scheme} {MASK}" if sep else MASK


def mask_header(name: str, value: str) -> str:
    """One header's value as it may be shown (`name` lower-case)."""
    if name in ("authorization", "proxy-authorization"):
        return mask_authorization(value)
    if is_secret_header(name):
        return MASK
    if name in URL_HEADERS:
        return mask_uri(value)
    return value


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    return {name: mask_header(name, value) for name, value in headers.items()}


def mask_query_string(query: str) -> str:
    if not query:
        return query
    parts = []
    for pair in query.split("&"):
        name, sep, _ = pair.partition("=")
        parts.append(f"{name}={MASK}" if sep and name.lower() in SECRET_QUERY else pair)
    return "&".join(parts)


def mask_uri(uri: str) -> str:
    """A path or URL with its credential query parameters masked (and any fragment dropped)."""
    base, sep, query = uri.partition("?")
    return base + sep + mask_query_string(query.partition("#")[0]) if sep else uri


def mask_input(policy_input: dict[str, Any]) -> dict[str, Any]:
    """A copy of the policy input with credentials masked; the original is left untouched."""
    http = policy_input["attributes"]["request"]["http"]
    masked_http = {**http, "headers": mask_headers(http["headers"]), "path": mask_uri(http["path"]),
                   "query": mask_query_string(http["query"])}
    parsed_query = {k: ([MASK] * len(v) if k.lower() in SECRET_QUERY else v)
                    for k, v in policy_input.get("parsed_query", {}).items()}
    attributes = {**policy_input["attributes"], "request": {**policy_input["attributes"]["request"],
                                                            "http": masked_http}}
    return {**policy_input, "attributes": attributes, "parsed_query": parsed_query}


def pointer(path: Iterable[str]) -> str:
    """A JSON pointer (RFC 6901) from its keys."""
    return "".join("/" + str(key).replace("~", "~0").replace("/", "~1") for key in path)


def changed_pointers(original: Any, shown: Any, path: tuple[str, ...] = ("input",)) -> list[str]:
    """JSON pointers of every value of `original` that `shown` (its masked copy) does not show as it
    was: what an audit event's `input_redacted` lists, so a replay never mistakes a mask for a value.
    The masked copy shares every branch it left alone, so those are passed over without comparing."""
    if isinstance(original, dict) and isinstance(shown, dict):
        changed: list[str] = []
        for key, value in original.items():
            other = shown.get(key, _GONE)
            if value is not other:
                changed += changed_pointers(value, other, (*path, key))
        return changed
    return [] if original is shown or original == shown else [pointer(path)]


_GONE = object()


def masked_pointers(policy_input: dict[str, Any]) -> list[str]:
    """JSON pointers of what `mask_input` masks, as OPA's decision-log mask policy reports them."""
    http = policy_input.get("attributes", {}).get("request", {}).get("http", {})
    headers = http.get("headers", {})
    pointers = [f"/input/attributes/request/http/headers/{name}" for name in sorted(headers)
                if is_secret_header(name) or (name in URL_HEADERS and mask_uri(headers[name]) != headers[name])]
    pointers += [f"/input/parsed_query/{name}" for name in sorted(policy_input.get("parsed_query", {}))
                 if name.lower() in SECRET_QUERY]
    return pointers


# ---------------------------------------------------------------- log records

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|Negotiate|ApiKey|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_QUERY_SECRET = re.compile(r"(?i)\b(" + "|".join(sorted(SECRET_QUERY)) + r")=[^&\s\"'<>]+")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{200,}")
_SAML_DOCUMENT = re.compile(r"<[^>]*(Response|Assertion|NameID|EncryptedAssertion|AttributeStatement)\b")


def mask_text(text: str) -> str:
    """Free text (a log message, an error detail) with credentials masked."""
    text = _JWT.sub(MASK, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return _BASE64_RUN.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """On a handler: every record that handler writes, the proxy's and libraries' alike, is masked.
    A record quoting a SAML document (pysaml2 puts the posted response, NameID and attributes, in
    the SignatureError of a failed transform check and logs it) is withheld whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as its format string
            message = str(record.msg)
        if _SAML_DOCUMENT.search(message):
            masked = f"[a SAML document was withheld from this {record.levelname} record of {record.name}]"
        else:
            masked = mask_text(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.msg, record.args = masked, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put a RedactingFilter on every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
