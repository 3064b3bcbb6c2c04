"""`iam-proxy explain`: what the proxy would do with one request, without forwarding anything.

It runs the real stages (route match, the route's authenticators or a given identity, the policy
input, the route's engine and cache, the header rewrite) on a synthesized request and reports each
one: the route matched, the identity, the exact policy input, the decision with its reasons, and the
URL and headers the upstream would receive. Credentials in the report are masked unless asked not to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any
from urllib.parse import unquote, urlsplit

from .redaction import mask_header, mask_input, mask_uri
from .authn.identity import Identity
from .context import context_from_scope
from .errors import ConfigError, PolicyError, ProxyError
from .policy.input import build_input
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

    proxy = Proxy(settings)
    report: dict[str, Any] = {"request": {"method": method.upper(), "url": url if show_secrets else mask_uri(url)}}
    try:
        await asyncio.gather(*(cache.refresh() for cache in proxy.jwks.values()))
        await _explain(proxy, report, synthesize_scope(method, url, headers, client), identity, show_secrets)
    finally:
        await proxy.stop()
    return report


async def _explain(proxy: Any, report: dict[str, Any], scope: dict[str, Any], identity: Identity | None,
                   show_secrets: bool) -> None:
    settings: Settings = proxy.settings
    try:
        ctx = context_from_scope(scope)
        ctx.route = proxy.pipeline.routes.match(ctx.method, ctx.host, ctx.path)
    except ProxyError as exc:
        report["route"] = {"error": exc.reason, "status": exc.status, "detail": exc.detail or exc.message}
        return
    route = ctx.route.settings
    engine_kind = settings.engine_for(route)
    report["route"] = {"id": route.id, "upstream": route.upstream, "policy_path": route.policy.path,
                       "engine": engine_kind, "cache": route.policy.cache, "dry_run": route.policy.dry_run,
                       "authenticators": list(route.authenticators)}
    try:
        ctx.identity = identity if identity is not None else await proxy.pipeline.authenticate(ctx)
    except ProxyError as exc:
        report["identity"] = {"error": exc.reason, "status": exc.status, **exc.facts}
        return
    report["identity"] = ctx.identity.to_dict()
    policy_input = build_input(ctx)
    report["input"] = policy_input if show_secrets else mask_input(policy_input)
    engine = proxy.policy.decider.engine_for(route.id)
    try:
        outcome = await proxy.policy.decider.decide(route.id, route.policy.path, policy_input)
    except PolicyError as exc:
        report["decision"] = {"allowed": False, "error": exc.reason, "status": exc.status,
                              "detail": exc.detail, "engine": engine.name, "revision": engine.revision,
                              "dry_run_would_allow": route.policy.dry_run}
        return
    decision = outcome.decision
    report["decision"] = {"allowed": decision.allowed, "reasons": list(decision.reasons), "result": decision.raw,
                          "engine": outcome.engine, "revision": outcome.revision, "cached": outcome.cached}
    if not decision.allowed:
        report["decision"]["status"] = decision.http_status or 403
        if not route.policy.dry_run:
            return
        report["decision"]["dry_run_would_allow"] = True
    assertion = None
    if not ctx.identity.anonymous:
        assertion = proxy.signer.sign(ctx.identity, audience=route.id, jti=ctx.decision_id)
    upstream_headers = proxy.rewriter.upstream_request_headers(
        ctx, ctx.identity, assertion,
        extra=decision.headers if decision.allowed else {},
        remove=decision.request_headers_to_remove if decision.allowed else (),
        preserve_host=route.preserve_host)
    report["upstream"] = {
        "url": proxy.upstream.url_for(ctx, ctx.route) if show_secrets else mask_uri(proxy.upstream.url_for(ctx, ctx.route)),
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
