"""Envoy in front, iam-proxy answering its ext_authz filter: the configuration of docs/envoy.md as
written (only the ports changed), for the benchmark and for tests/envoy/.

    envoy_config(mode, ports)  docs/envoy.md's Envoy config, gRPC or HTTP mode, on the given ports
    start_envoy(...)           the Envoy binary scripts/install-peers.sh unpacks, as a child process
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from snippets import snippet  # noqa: E402 - the docs' code blocks, by name

# the ports docs/envoy.md uses: Envoy, iam-proxy's proxy listener, the backend, gRPC and HTTP checks
DOCUMENTED_PORTS = (8000, 8080, 8081, 9191, 9192)


def envoy_binary() -> str:
    """The Envoy that scripts/install-peers.sh unpacks; a missing binary is an error."""
    path = Path(os.environ.get("IAM_PROXY_ENVOY") or Path.home() / ".cache" / "iam-proxy" / "bin" / "envoy")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"Envoy not found at {path}: run scripts/install-peers.sh (make peers)")
    return str(path)


def _ported(text: str, ports: dict[int, int]) -> str:
    for documented, actual in ports.items():
        if f"port_value: {documented}" not in text and f"127.0.0.1:{documented}" not in text:
            raise ValueError(f"the snippet no longer uses port {documented}")
        text = text.replace(f"port_value: {documented}", f"port_value: {actual}")
        text = text.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{actual}")
    return text


def envoy_config(mode: str, ports: dict[int, int]) -> str:
    """docs/envoy.md's Envoy: the gRPC configuration, or with its HTTP-mode filter and cluster."""
    config = yaml.safe_load(_ported(snippet("envoy-grpc").text, {k: v for k, v in ports.items() if k != 9192}))
    if mode == "http":
        manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        http_port = {9192: ports[9192]}
        manager["http_filters"][0] = yaml.safe_load(_ported(snippet("envoy-http-filter").text, http_port))[0]
        config["static_resources"]["clusters"] += yaml.safe_load(_ported(snippet("envoy-http-cluster").text, http_port))
    return yaml.safe_dump(config)


def envoy_argv(config_path: Path, base_id: int, concurrency: int = 1) -> list[str]:
    return [envoy_binary(), "-c", str(config_path), "--log-level", "warn", "--base-id", str(base_id),
            "--concurrency", str(concurrency)]


def start_envoy_ext_authz(ctx, mode: str):
    """iam-proxy with both ext_authz listeners, and Envoy (docs/envoy.md) in front of the upstream."""
    from .targets import Running, Service, _in_process_policy, _pinned, _start_iam, free_port, wait_for_port

    checks = {9191: free_port(), 9192: free_port()}
    iam, iam_port = _start_iam(ctx, f"envoy-{mode}-iam", _in_process_policy(), extra={"ext_authz": {
        "grpc": {"host": "127.0.0.1", "port": checks[9191]}, "http": {"host": "127.0.0.1", "port": checks[9192]},
        "path_prefix": "/check", "trusted_peers": ["127.0.0.1/32"]}})
    front = free_port()
    config = ctx.workdir / f"envoy-{mode}.yaml"
    config.write_text(envoy_config(mode, {8000: front, 8080: iam_port, 8081: ctx.upstream.port, **checks}))
    envoy = Service(f"envoy-{mode}", envoy_argv(config, base_id=front, concurrency=2), ctx.workdir)
    try:
        wait_for_port(front, envoy.proc)
    except (RuntimeError, TimeoutError):
        envoy.stop()
        iam.stop()
        raise
    return Running(f"http://127.0.0.1:{front}", [envoy.pid, iam.pid], [iam, envoy],
                   notes=f"Envoy {_pinned('ENVOY_VERSION')} (2 worker threads), ext_authz {mode} to iam-proxy "
                         "(embedded Rego, decision cache on; every worker answers checks); CPU by process: Envoy, iam-proxy")
