"""The header-name property of tests/unit/test_edge_properties.py against the real proxy process:
generated spellings of identity headers, written raw on a socket, never reach the upstream."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_strategies import identity_spellings
from rawhttp import RecordingUpstream, request_bytes, send_raw
from support import DevIssuer, ProxyProcess, base_config, copy_policies


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge-live")
    recorder = RecordingUpstream()
    issuer = DevIssuer(tmp / "issuer")
    proxy = ProxyProcess(base_config(recorder.url, issuer.jwks_path, tmp / "audit.jsonl",
                                     copy_policies(tmp / "policies")), tmp).wait_ready()
    proxy.token = issuer.token("alice", ["finance"])
    yield proxy
    proxy.stop()
    recorder.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(names=st.lists(identity_spellings(), min_size=1, max_size=8),
       path=st.sampled_from(["/public/x", "/public//x", "/api/invoices/1"]))
def test_generated_identity_headers_never_reach_the_upstream(live, names, path):
    headers = [(name, f"mallory{i}") for i, name in enumerate(names)]
    r = send_raw(live.port, request_bytes("GET", path, [("Authorization", f"Bearer {live.token}"), *headers]))
    assert r.status == 200, r.body
    assert b"mallory" not in r.body, (names, r.upstream_head().headers)
    assert r.upstream_head().get("X-Forwarded-User") == b"alice"
