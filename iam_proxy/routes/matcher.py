"""Route matching: every route is tried, and exactly one must match (none -> 404, several -> 500).

Refusing ambiguity, rather than taking the first match, means a new route can never silently shadow
an existing one (the trap oathkeeper's rule repository avoids the same way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..core.errors import RouteAmbiguous, RouteNotFound
from ..settings.routes import Route


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """`*` matches one path segment (or part of one), `**` any number of segments, even none."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    out.append("$")
    return re.compile("".join(out))


def _host_matcher(hosts: list[str]):
    if not hosts:
        return lambda host: True
    exact = {h.lower() for h in hosts if not h.startswith("*.")}
    suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))

    def match(host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.lower()
        return name in exact or (bool(suffixes) and name.endswith(suffixes))

    return match


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    settings: Route
    path_regex: re.Pattern[str]
    methods: frozenset[str]
    host_match: object
    upstream_scheme: str
    upstream_host: str  # as in the URL (the Host header sent upstream): name[:port]
    upstream_base_path: str
    upstream_address: tuple[str, int]  # where to connect

    @property
    def id(self) -> str:
        return self.settings.id

    def matches(self, method: str, host: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        if not self.host_match(host):  # type: ignore[operator]
            return False
        return self.path_regex.match(path) is not None


def compile_route(route: Route) -> CompiledRoute:
    parts = urlsplit(route.upstream)
    return CompiledRoute(
        settings=route,
        path_regex=glob_to_regex(route.match.path),
        methods=frozenset(route.match.methods),
        host_match=_host_matcher(route.match.hosts),
        upstream_scheme=parts.scheme,
        upstream_host=parts.netloc,
        upstream_base_path=parts.path.rstrip("/"),
        upstream_address=(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)),
    )


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = [compile_route(r) for r in routes]

    def match(self, method: str, host: str, path: str) -> CompiledRoute:
        found = [r for r in self.routes if r.matches(method, host, path)]
        if not found:
            raise RouteNotFound()
        if len(found) > 1:
            raise RouteAmbiguous(detail="matched routes: " + ", ".join(r.id for r in found))
        return found[0]
