"""Helpers for the ext_authz tests: the proxy configured with both ext_authz listeners, CheckRequests
built with Envoy's published protos (xds-protos stubs), and a real Envoy started from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import attribute_context_pb2 as ctx_pb
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc

from bench.envoy_front import envoy_argv, envoy_config
from support import DevIssuer, Process, ProxyProcess, base_config, copy_policies, free_port, wait_for_port

# A policy in opa-envoy-plugin's result form: every field Envoy can be told about
ENVOY_TEST_POLICY = """package envoytest

import rego.v1

default decision := {"allowed": false, "http_status": 418, "body": "no coffee for you",
	"headers": {"x-denied-by": "envoytest"}}

decision := {"allowed": true, "headers": {"x-policy": "granted"},
	"request_headers_to_remove": ["x-internal-secret"],
	"response_headers_to_add": {"x-served-by": "iam-proxy"},
	"dynamic_metadata": {"subject": input.identity.sub, "upgrade": is_upgrade}} if {
	"finance" in input.identity.groups
}

decision := {"allowed": true, "dynamic_metadata": "not an object"} if {
	"broken" in input.identity.groups
}

is_upgrade := lower(object.get(input.attributes.request.http.headers, "upgrade", "")) == "websocket"
"""

ROUTES = [
    {"id": "envoytest", "match": {"path": "/envoytest/**"}, "authenticators": ["bearer"],
     "policy": {"path": "envoytest/decision"}},
    {"id": "opa-envoy", "match": {"path": "/envoy/**"}, "authenticators": ["public"],
     "policy": {"path": "envoy/authz/allow"}},
]


def extauthz_config(upstream: str, issuer, audit_path: Path, policies: Path) -> dict[str, Any]:
    config = base_config(upstream, issuer.jwks_path, audit_path, policies)
    config["routes"] += [{**route, "upstream": upstream} for route in ROUTES]
    config["ext_authz"] = {"grpc": {"host": "127.0.0.1", "port": free_port()},
                           "http": {"host": "127.0.0.1", "port": free_port()},
                           "trusted_peers": ["127.0.0.1/32"]}
    return config


def start_iam(tmp: Path, upstream: str, policies: dict[str, str] | None = None,
              routes: list[dict[str, Any]] = (), extauthz: dict[str, Any] | None = None,
              workers: int = 1) -> ProxyProcess:
    """iam-proxy with both ext_authz listeners and the envoytest policy (plus `policies`, `routes`,
    and `extauthz` settings over the listeners'), in `workers` processes."""
    issuer = DevIssuer(tmp / "issuer")
    policy_dir = copy_policies(tmp / "policies", {"envoytest/envoytest.rego": ENVOY_TEST_POLICY, **(policies or {})})
    config = extauthz_config(upstream, issuer, tmp / "audit.jsonl", policy_dir)
    config["routes"] += [{**route, "upstream": upstream} for route in routes]
    listeners = {"grpc": config["ext_authz"]["grpc"], "http": config["ext_authz"]["http"]}
    config["ext_authz"] = {**config["ext_authz"], **(extauthz or {}), **listeners}
    config["listeners"]["workers"] = workers
    proxy = ProxyProcess(config, tmp).wait_ready()
    proxy.issuer = issuer
    proxy.grpc_port = config["ext_authz"]["grpc"]["port"]
    return proxy


def check_request(path: str, headers: dict[str, str] | None = None, method: str = "GET",
                  host: str = "app.test", client: str = "203.0.113.7", body: str = "",
                  **extensions: str) -> pb.CheckRequest:
    http = ctx_pb.AttributeContext.HttpRequest(
        id="1", method=method, path=path, host=host, scheme="http", protocol="HTTP/1.1",
        headers={":authority": host, ":method": method, ":path": path, **(headers or {})}, body=body)
    attributes = ctx_pb.AttributeContext(request=ctx_pb.AttributeContext.Request(http=http),
                                         context_extensions=extensions)
    attributes.source.address.socket_address.address = client
    attributes.source.address.socket_address.port_value = 40000
    return pb.CheckRequest(attributes=attributes)


def grpc_check(port: int, request: pb.CheckRequest, timeout: float = 5.0) -> pb.CheckResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return pb_grpc.AuthorizationStub(channel).Check(request, timeout=timeout)


def headers_of(options) -> dict[str, str]:
    return {h.header.key.lower(): h.header.value for h in options}


def start_envoy(directory: Path, config: str, port: int) -> Process:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "envoy.yaml").write_text(config)
    process = Process(envoy_argv(directory / "envoy.yaml", base_id=port), directory / "envoy.log")
    wait_for_port(port, process.proc, timeout=30)
    return process


def start_documented_envoy(directory: Path, mode: str, iam: ProxyProcess, backend_port: int) -> tuple[Process, int]:
    """docs/envoy.md's Envoy in `mode` ("grpc" or "http"), its ports pointed at this test's iam-proxy
    and backend; returns the process and the port clients reach Envoy on."""
    front = free_port()
    ports = {8000: front, 8080: iam.port, 8081: backend_port,
             9191: iam.config["ext_authz"]["grpc"]["port"], 9192: iam.config["ext_authz"]["http"]["port"]}
    return start_envoy(directory, envoy_config(mode, ports), front), front
