"""`iam-proxy explain`: what the proxy would do with one request, without forwarding anything.

It asks the live pipeline (`Pipeline.decide`: route match, the route's authenticators or a given
identity, its enrichers, the policy input, the route's engine and cache, the headers to set) about a
synthesized request and reports each stage: the route matched, the identity, the exact policy input,
the decision with its reasons, and the URL and headers the upstream would receive. Credentials in the
report are masked unless asked not to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .context import RequestDescription
from .core.errors import ConfigError, PolicyError
from .core.identity import Identity
from .core.redaction import mask_header, mask_input, mask_uri
from .pipeline import Outcome
from .settings import Settings

_TUPLE_FIELDS = {"groups", "roles", "scopes", "amr"}


def identity_from_json(text: str) -> Identity:
    """An Identity from JSON (`sub` required; `method` defaults to jwt), refusing unknown fields."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--identity: not JSON ({exc.msg})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("sub"), str):
        raise ConfigError("--identity: must be a JSON object with a string 'sub'")
    known = {f.name for f in dataclasses.fields(Identity)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"--identity: unknown fields {unknown} (known: {sorted(known)})")
    raw.setdefault("method", "jwt")
    return Identity(**{k: tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v for k, v in raw.items()})


def synthesize_scope(method: str, url: str, headers: list[tuple[str, str]], client: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url: must be an absolute http(s) URL, not {url!r}")
    raw_path = parts.path or "/"
    names = {k.lower() for k, _ in headers}
    all_headers = ([] if "host" in names else [("host", parts.netloc)]) + headers
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method.upper(),
        "scheme": parts.scheme, "path": unquote(raw_path), "raw_path": raw_path.encode("latin-1"),
        "query_string": parts.query.encode("latin-1"), "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in all_headers],
        "client": (client, 0), "server": (parts.hostname or "", parts.port or 0),
    }


def _masked_headers(headers: list[tuple[str, str]], assertion_header: str) -> list[list[str]]:
    out = []
    for name, value in headers:
        if name.lower() == assertion_header.lower():
            out.append([name, f"<signed JWT {len(value)} bytes>"])
        else:
            out.append([name, mask_header(name.lower(), value)])
    return out


async def explain(settings: Settings, method: str, url: str, headers: list[tuple[str, str]],
                  identity: Identity | None = None, client: str = "127.0.0.1",
                  show_secrets: bool = False) -> dict[str, Any]:
    from .app import Proxy  # the same wiring as `run`, so the answer is the proxy's answer

    with tempfile.TemporaryDirectory(prefix="iam-proxy-explain-") as scratch:
        # explain records nothing: a running proxy's audit spool is that proxy's alone
        proxy = Proxy(settings, audit=settings.audit.relocated(Path(scratch)))
        report: dict[str, Any] = {"request": {"method": method.upper(),
                                              "url": url if show_secrets else mask_uri(url)}}
        try:
            await asyncio.gather(*(cache.refresh() for cache in proxy.jwks.values()))
            request = RequestDescription.from_scope(synthesize_scope(method, url, headers, client))
            outcome = await proxy.pipeline.decide(request, identity)
            _report(proxy, report, outcome, show_secrets)
        finally:
            await proxy.stop()
    return report


def _report(proxy: Any, report: dict[str, Any], outcome: Outcome, show_secrets: bool) -> None:
    """Each stage of the live pipeline's outcome, up to the one that refused the request."""
    settings: Settings = proxy.settings
    ctx, error = outcome.ctx, outcome.error
    if ctx is None or ctx.route is None:
        assert error is not None
        report["route"] = {"error": error.reason, "status": error.status, "detail": error.detail or error.message}
        return
    route = ctx.route.settings
    report["route"] = {"id": route.id, "upstream": route.upstream, "policy_path": route.policy.path,
                       "engine": settings.engine_for(route), "cache": route.policy.cache,
                       "dry_run": route.policy.dry_run, "authenticators": list(route.authenticators)}
    if ctx.identity is None or outcome.audit.policy_input is None:
        assert error is not None
        report["identity"] = {"error": error.reason, "status": error.status, **error.facts}
        return
    report["identity"] = ctx.identity.to_dict()
    policy_input = outcome.audit.policy_input
    report["input"] = policy_input if show_secrets else mask_input(policy_input)
    decided = outcome.decision
    engine = proxy.policy.decider.engine_for(route.id)
    if decided is None or (isinstance(error, PolicyError) and not route.policy.dry_run):
        assert error is not None
        report["decision"] = {"allowed": False, "error": error.reason, "status": error.status,
                              "detail": error.detail, "engine": engine.name, "revision": engine.revision,
                              "dry_run_would_allow": route.policy.dry_run}
        return
    decision = decided.decision
    report["decision"] = {"allowed": decision.allowed, "reasons": list(decision.reasons), "result": decision.raw,
                          "engine": decided.engine, "revision": decided.revision, "cached": decided.cached}
    if not decision.allowed:
        report["decision"]["status"] = decision.http_status or 403
        if not route.policy.dry_run:
            return
        report["decision"]["dry_run_would_allow"] = True
    if error is not None:
        return
    upstream_headers = proxy.rewriter.upstream_request_headers(ctx, outcome.upstream_headers, outcome.upstream_removed,
                                                               preserve_host=route.preserve_host)
    url = proxy.upstream.url_for(ctx, ctx.route)
    report["upstream"] = {
        "url": url if show_secrets else mask_uri(url),
        "headers": [list(h) for h in upstream_headers] if show_secrets
        else _masked_headers(upstream_headers, settings.identity_headers.assertion.header),
    }


def render_text(report: dict[str, Any]) -> str:
    """The report for a terminal: one section per stage, in request order."""
    lines = [f"request:   {report['request']['method']} {report['request']['url']}"]
    route = report.get("route", {})
    if "error" in route:
        lines.append(f"route:     NONE ({route['error']}, HTTP {route['status']}: {route['detail']})")
        return "\n".join(lines)
    lines.append(f"route:     {route['id']} -> {route['upstream']}  (policy {route['policy_path']} on engine "
                 f"{route['engine']}{', cached' if route['cache'] else ''}{', DRY RUN' if route['dry_run'] else ''})")
    identity = report.get("identity", {})
    if "error" in identity:
        lines.append(f"identity:  REJECTED ({identity['error']}, HTTP {identity['status']}); "
                     f"authenticators tried: {', '.join(route['authenticators'])}")
        lines += [f"           {key}: {value}" for key, value in identity.items() if key not in ("error", "status")]
        return "\n".join(lines)
    lines.append(f"identity:  {identity['sub']} via {identity['method']}"
                 + (f" (issuer {identity['iss']})" if identity.get("iss") else ""))
    for key in ("username", "email", "groups", "roles", "scopes", "tenant"):
        if identity.get(key):
            lines.append(f"           {key}: {identity[key]}")
    lines.append("input:")
    lines += ["  " + line for line in json.dumps(report["input"], indent=2, sort_keys=True).splitlines()]
    decision = report["decision"]
    if "error" in decision:
        lines.append(f"decision:  DENY ({decision['error']}, HTTP {decision['status']}): {decision['detail']}")
    else:
        verdict = "ALLOW" if decision["allowed"] else f"DENY (HTTP {decision.get('status', 403)})"
        lines.append(f"decision:  {verdict}  engine {decision['engine']}, revision {decision['revision']}"
                     + (", from cache" if decision.get("cached") else ""))
        for reason in decision["reasons"]:
            lines.append(f"           reason: {reason}")
        lines.append(f"           result: {json.dumps(decision['result'], sort_keys=True)}")
    if decision.get("dry_run_would_allow"):
        lines.append("           dry run: the request WOULD BE FORWARDED anyway")
    upstream = report.get("upstream")
    if upstream:
        lines.append(f"upstream:  {upstream['url']}")
        lines += [f"  {name}: {value}" for name, value in upstream["headers"]]
    else:
        lines.append("upstream:  nothing is forwarded")
    return "\n".join(lines)
