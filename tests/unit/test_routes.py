from __future__ import annotations

import pytest

from iam_proxy.core.errors import RouteAmbiguous, RouteNotFound
from iam_proxy.routes.matcher import RouteTable, glob_to_regex
from iam_proxy.settings.routes import Route


def route(rid: str, path: str, methods=(), hosts=()) -> Route:
    return Route(id=rid, upstream="http://u", authenticators=["a"],
                 match={"path": path, "methods": list(methods), "hosts": list(hosts)})


@pytest.mark.parametrize("pattern, path, expected", [
    ("/api/**", "/api", True),
    ("/api/**", "/api/", True),
    ("/api/**", "/api/a/b/c", True),
    ("/api/**", "/apix", False),
    ("/api/*/lines", "/api/7/lines", True),
    ("/api/*/lines", "/api/7/8/lines", False),
    ("/files/*.pdf", "/files/a.pdf", True),
    ("/exact", "/exact/", False),
])
def test_globs(pattern, path, expected):
    assert bool(glob_to_regex(pattern).match(path)) is expected


def test_exactly_one_route_or_an_error():
    table = RouteTable([route("a", "/api/**", ["GET"]), route("b", "/api/admin/**"),
                        route("c", "/public/**", hosts=["*.example.com"])])
    assert table.match("GET", "h", "/api/x").id == "a"
    assert table.match("POST", "h", "/api/admin/x").id == "b"
    with pytest.raises(RouteAmbiguous):
        table.match("GET", "h", "/api/admin/x")
    with pytest.raises(RouteNotFound):
        table.match("POST", "h", "/api/x")
    assert table.match("GET", "www.example.com:443", "/public/x").id == "c"
    with pytest.raises(RouteNotFound):
        table.match("GET", "example.com.evil.io", "/public/x")
