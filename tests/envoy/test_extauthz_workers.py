"""ext_authz with `listeners.workers: 2`: every worker answers checks, in both modes, on the
configured ports (SO_REUSEPORT, workers.py), so checks use every core as proxied requests do."""

from __future__ import annotations

import socket
import time
from contextlib import closing

import httpx
import pytest

from envoy_support import check_request, extauthz_config, grpc_check, start_documented_envoy, start_iam
from rawhttp import RecordingUpstream, request_bytes, send_raw
from support import DevIssuer, ProxyProcess, copy_policies, free_port, wait_for_port

from iam_proxy.cli import EXIT_CONFIG
from iam_proxy.core.errors import ConfigError
from iam_proxy.settings import parse_settings

pytestmark = pytest.mark.peer("envoy")


@pytest.fixture(scope="module")
def recorder():
    with closing(RecordingUpstream()) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def iam(recorder, tmp_path_factory):
    proxy = start_iam(tmp_path_factory.mktemp("workers-iam"), recorder.url,
                      extauthz={"path_prefix": "/check"}, workers=2)
    for mode in ("grpc", "http"):  # served once a worker's proxy has started (app.py)
        wait_for_port(proxy.config["ext_authz"][mode]["port"], proxy.process.proc)
    yield proxy
    proxy.stop()


def _per_worker(iam: ProxyProcess) -> dict[str, int]:
    """Audit events per worker file (`audit.jsonl` is worker 0's, `audit.w1.jsonl` worker 1's)."""
    counts = {}
    for path in iam.audit_files():
        text = path.read_text()
        counts[path.name] = text[:text.rfind("\n") + 1].count("\n")
    return counts


def _until_both_workers_answered(iam: ProxyProcess, check_once) -> dict[str, int]:
    """Checks on new connections until both workers' files have events (a worker's listeners come
    up a moment after the other's); each check must be allowed."""
    deadline = time.monotonic() + 20
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        for _ in range(10):
            check_once()
        counts = _per_worker(iam)
        if len(counts) == 2 and all(counts.values()):
            break
    return counts


def _token(iam) -> str:
    return f"Bearer {iam.issuer.token('alice', ['finance'])}"


def test_ready_means_every_worker_s_grpc_listener_is_up(iam):
    body = httpx.get(f"{iam.admin_url}/readyz").json()
    assert body["checks"]["ext_authz:grpc"] is True
    assert body["workers"] == {"0": {"ready": True}, "1": {"ready": True}}


def test_grpc_checks_are_answered_by_every_worker(iam):
    def check_once():  # a new channel each time: a new connection, which the kernel may give either worker
        response = grpc_check(iam.grpc_port, check_request("/envoytest/x", {"authorization": _token(iam)}))
        assert response.status.code == 0, response

    counts = _until_both_workers_answered(iam, check_once)
    assert sorted(counts) == ["audit.jsonl", "audit.w1.jsonl"] and all(counts.values()), counts


def test_http_checks_are_answered_by_every_worker(iam):
    port = iam.config["ext_authz"]["http"]["port"]

    def check_once():
        with httpx.Client() as client:  # a new connection each time
            response = client.get(f"http://127.0.0.1:{port}/check/envoytest/x",
                                  headers={"Authorization": _token(iam), "Host": "app.test"})
        assert response.status_code == 200, response.text

    counts = _until_both_workers_answered(iam, check_once)
    assert sorted(counts) == ["audit.jsonl", "audit.w1.jsonl"] and all(counts.values()), counts


@pytest.mark.parametrize("mode", ["grpc", "http"])
def test_envoy_in_front_of_two_workers(mode, iam, recorder, tmp_path_factory):
    process, front = start_documented_envoy(tmp_path_factory.mktemp(f"workers-envoy-{mode}"), mode, iam,
                                            int(recorder.url.rsplit(":", 1)[1]))
    try:
        allowed = send_raw(front, request_bytes("GET", "/envoytest/ok", [("Authorization", _token(iam))],
                                                host="app.test"))
        refused = send_raw(front, request_bytes("GET", "/envoytest/ok", [], host="app.test"))
    finally:
        process.stop()
    assert allowed.status == 200, allowed.body
    assert allowed.upstream_head().get("x-forwarded-user") == b"alice"
    assert refused.status == 401


@pytest.mark.parametrize("mode", ["grpc", "http"])
def test_a_taken_port_stops_the_workers_before_they_start(mode, recorder, tmp_path):
    issuer = DevIssuer(tmp_path / "issuer")
    config = extauthz_config(recorder.url, issuer, tmp_path / "audit.jsonl", copy_policies(tmp_path / "policies"))
    config["listeners"]["workers"] = 2
    with socket.socket() as holder:  # another process's listener, without SO_REUSEPORT
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        config["ext_authz"][mode]["port"] = holder.getsockname()[1]
        proxy = ProxyProcess(config, tmp_path)
        try:
            code, logs = proxy.process.proc.wait(20), proxy.process.logs()
        finally:
            proxy.stop()
    assert code == EXIT_CONFIG
    port = config["ext_authz"][mode]["port"]
    assert f"error: ext_authz.{mode}.port: cannot listen on 127.0.0.1:{port} (Address already in use)" in logs


@pytest.mark.parametrize("mode", ["grpc", "http"])
def test_workers_need_fixed_ext_authz_ports(mode):
    raw = {"listeners": {"workers": 2, "proxy": {"port": free_port()}},
           "authenticators": {"public": {"type": "anonymous"}},
           "routes": [{"id": "r", "match": {"path": "/**"}, "upstream": "http://127.0.0.1:9",
                       "authenticators": ["public"]}],
           "ext_authz": {mode: {"host": "127.0.0.1", "port": 0}, "trusted_peers": ["127.0.0.1/32"]}}
    with pytest.raises(ConfigError) as error:
        parse_settings(raw)
    assert str(error.value) == f"ext_authz.{mode}.port: listeners.workers > 1 needs a fixed port (not 0)"


def test_every_worker_signs_with_the_same_key(iam):
    """No assertion key_file: the service's one ephemeral key, made before the workers fork."""
    kids = set()
    for _ in range(30):
        with httpx.Client() as client:  # a new connection each time
            kids |= {key["kid"] for key in client.get(f"{iam.url}/.well-known/jwks.json").json()["keys"]}
    assert len(kids) == 1, kids
