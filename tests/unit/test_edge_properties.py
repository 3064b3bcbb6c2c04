"""Property tests of the edge (hypothesis): header names, paths and token claims. For any input a
client can write, the rules hold: no identity header in any spelling reaches the upstream, values
travel byte for byte, a path is refused or normalised one way, and a token's times are sane
numbers or the token is refused. tests/e2e/test_edge_properties_live.py runs header names against
the real proxy process too.
"""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_strategies import identity_spellings
from iam_proxy.authn.bearer_jwt import MAX_NUMERIC_DATE, JWTAuthenticator
from iam_proxy.core.identity import Identity
from iam_proxy.context import context_from_scope
from iam_proxy.core.errors import BadRequest, InvalidCredential
from iam_proxy.core.networks import TrustedNetworks
from iam_proxy.forward.headers import HeaderRewriter
from iam_proxy.core.header_safety import IDENTITY_HEADERS, normalise
from iam_proxy.routes.matcher import RouteTable
from iam_proxy.settings.forward import IdentityHeaders
from iam_proxy.settings.identity import JWTProvider
from iam_proxy.settings.routes import Route

TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"


def _scope(path: bytes, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "method": "GET", "scheme": "http", "path": path.decode("latin-1"), "raw_path": path,
            "query_string": b"", "headers": [(b"host", b"proxy.test"), *headers], "client": ("10.0.0.9", 1)}


def _rewrite(headers: list[tuple[bytes, bytes]], route: Route | None = None) -> list[tuple[str, str]]:
    route = route or Route(id="r", upstream="http://127.0.0.1:9", authenticators=["a"])
    ctx = context_from_scope(_scope(b"/x", headers))
    ctx.route = RouteTable([route]).match("GET", "proxy.test", "/x")
    rewriter = HeaderRewriter(IdentityHeaders(), TrustedNetworks([]))
    identity = Identity(sub="alice", method="jwt", email="alice@example.org", groups=("finance",))
    set_headers = rewriter.set_headers(ctx, identity, "a.b.c", {})
    return rewriter.upstream_request_headers(ctx, set_headers, frozenset(), preserve_host=False)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(spelling=identity_spellings(), value=st.binary(min_size=1, max_size=40).filter(lambda v: b"\r" not in v
                                                                                      and b"\n" not in v))
def test_no_spelling_of_an_identity_header_reaches_the_upstream(spelling, value):
    out = _rewrite([(spelling.encode(), b"mallory-" + value)])
    assert not any(v.startswith("mallory-") for _, v in out), (spelling, out)


@settings(max_examples=300)
@given(name=st.text(TOKEN_CHARS, min_size=1, max_size=30),
       value=st.binary(max_size=60).filter(lambda v: not set(v) & {0, 10, 13}))
def test_any_other_header_passes_byte_for_byte_or_is_dropped_for_a_stated_reason(name, value):
    out = dict(_rewrite([(name.encode(), value)]))
    key = name.lower()
    kept = key in out and out[key] == value.decode("latin-1")
    assert kept or "_" in name or "." in name or normalise(name) in IDENTITY_HEADERS \
        or normalise(name).startswith(("x-iam-", "x-auth-request-", "x-pomerium-", "x-amzn-oidc-",
                                       "x-goog-authenticated-user-", "x-ms-client-principal", "x-ms-token-",
                                       "x-ssl-client-", "x-remote-user-")) \
        or key in ("host", "authorization", "cookie", "connection", "keep-alive", "te", "trailer", "upgrade",
                   "transfer-encoding", "proxy-authorization", "proxy-authenticate", "proxy-connection",
                   "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
                   "x-real-ip", "forwarded", "x-original-uri", "x-original-method", "x-original-url",
                   "x-forwarded-uri", "x-forwarded-method", "x-http-method-override", "x-http-method",
                   "x-method-override"), (name, out)


SEGMENT = st.text(string.ascii_letters + string.digits + "-._~%/\\", max_size=12)


@settings(max_examples=400)
@given(segments=st.lists(SEGMENT, max_size=6))
def test_a_path_is_refused_or_has_one_normal_form(segments):
    raw = ("/" + "/".join(segments)).encode()
    try:
        ctx = context_from_scope(_scope(raw, []))
    except BadRequest as exc:
        assert exc.reason == "path_not_normalized"
        return
    assert "//" not in ctx.raw_path
    assert not any(seg in (".", "..") for seg in ctx.path.split("/"))
    lowered = ctx.raw_path.lower()
    assert "%2f" not in lowered and "%5c" not in lowered and "%00" not in lowered
    assert ctx.parsed_path == [s for s in ctx.path.split("/")[1:]] or ctx.raw_path == "/"


@settings(max_examples=200)
@given(prefix=st.text(string.ascii_lowercase, min_size=1, max_size=5),
       rest=st.text(string.ascii_lowercase + "/", max_size=12))
def test_strip_prefix_never_cuts_a_segment(prefix, rest):
    from iam_proxy.forward.upstream import UpstreamClient

    route = Route(id="r", upstream="http://127.0.0.1:9/base", authenticators=["a"], strip_prefix="/" + prefix)
    path = "/" + prefix + rest
    try:
        ctx = context_from_scope(_scope(path.encode(), []))
    except BadRequest:
        return
    compiled = RouteTable([route]).routes[0]
    target = UpstreamClient().target_for(ctx, compiled)
    tail = target[len("/base"):]
    if ctx.raw_path == "/" + prefix or ctx.raw_path.startswith("/" + prefix + "/"):
        assert tail == (ctx.raw_path[len(prefix) + 1:] or "/")
    else:
        assert tail == ctx.raw_path


NUMBERS = st.one_of(st.integers(min_value=-2 ** 80, max_value=2 ** 80), st.floats(allow_nan=True),
                    st.booleans(), st.text(max_size=5), st.none(), st.just(1e300), st.just(float("inf")))
NOW = 1_800_000_000.0
PROVIDER = JWTProvider(id="p", issuer="https://idp", jwks_file="/dev/null", audiences=["api"],
                       max_token_lifetime_seconds=86400, leeway_seconds=30)


@settings(max_examples=500)
@given(exp=NUMBERS, nbf=NUMBERS, iat=NUMBERS)
def test_token_times_are_sane_numbers_or_the_token_is_refused(exp, nbf, iat):
    claims = {"iss": "https://idp", "aud": "api", "sub": "s", "exp": exp, "nbf": nbf, "iat": iat}
    claims = {k: v for k, v in claims.items() if v is not None}
    try:
        JWTAuthenticator._check_claims(claims, PROVIDER, NOW)
    except InvalidCredential as exc:
        assert exc.reason in ("token_claim_invalid", "token_expired", "token_not_yet_valid", "token_malformed",
                              "token_issued_in_future", "token_lifetime_too_long")
        return
    times = [claims[k] for k in ("exp", "nbf", "iat") if k in claims]
    for t in times:
        assert not isinstance(t, bool) and isinstance(t, (int, float)) and math.isfinite(t)
        assert 0 <= t <= MAX_NUMERIC_DATE
    assert NOW <= claims["exp"] + 30
    starts = [claims[k] for k in ("iat", "nbf") if k in claims] or [NOW]
    assert claims["exp"] - min(max(starts), NOW) <= 86400


@pytest.mark.parametrize("name", ["X_Forwarded_User", "x.forwarded.user", "REMOTE_USER", "X-Pomerium-Claim-Groups"])
def test_examples_the_properties_cover(name):
    assert not any(v == "mallory" for _, v in _rewrite([(name.encode(), b"mallory")]))
