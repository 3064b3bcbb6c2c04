"""docs/envoy.md's deployment for a module's backend: the module gives `backend_url` (the backend
Envoy routes to), these give iam-proxy with the documented ext_authz listeners and a real Envoy
running the documented configuration in gRPC and HTTP mode (only the ports changed)."""

from __future__ import annotations

import pytest
import yaml

from envoy_support import start_documented_envoy, start_iam
from snippets import snippet


@pytest.fixture(scope="module")
def iam(backend_url, tmp_path_factory):
    proxy = start_iam(tmp_path_factory.mktemp("envoy-iam"), backend_url,
                      extauthz=yaml.safe_load(snippet("ext-authz-config").text)["ext_authz"])
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module", params=["grpc", "http"])
def envoy(request, iam, backend_url, tmp_path_factory):
    backend_port = int(backend_url.rsplit(":", 1)[1])
    process, front = start_documented_envoy(tmp_path_factory.mktemp(f"envoy-{request.param}"), request.param, iam,
                                            backend_port)
    yield {"port": front, "mode": request.param, "process": process}
    process.stop()
