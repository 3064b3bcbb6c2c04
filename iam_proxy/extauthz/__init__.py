"""Envoy external authorization: the `ext_authz` filter asks iam-proxy, over gRPC
(`envoy.service.auth.v3.Authorization/Check`) or in Envoy's HTTP mode, whether a request may pass.

A check is authenticated, decided and audited exactly as a proxied request is (the same
authenticators, policies, identity headers, signed assertion and audit event); see docs/envoy.md.

    grpc_service.py | http_service.py   wire <-> Check / Verdict (check.py)
    adapter.py                          Decide on the pipeline (the only module that knows it)
    envoy_input.py                      opa-envoy-plugin's input fields a check adds
"""

from __future__ import annotations

from typing import Any

from ..settings.listeners import ExtAuthzSettings
from .check import Decide
from .http_service import HttpCheckApp


class ExtAuthz:
    """The ext_authz listeners of one proxy: the gRPC server it starts and stops, the HTTP app
    that server.py serves. `shared_port`: every worker process answers checks (workers.py), so the
    gRPC server joins the others on its port."""

    def __init__(self, settings: ExtAuthzSettings, decide: Decide, shared_port: bool = False) -> None:
        self.settings = settings
        self.decide = decide
        self.shared_port = shared_port
        self.http_app = HttpCheckApp(self.decide, settings.trusted_peers, settings.path_prefix) \
            if settings.http is not None else None
        self._grpc: Any = None

    @property
    def ready(self) -> bool:
        """False until the gRPC server, when one is configured, listens."""
        return self.settings.grpc is None or self._grpc is not None

    async def start(self) -> None:
        if self.settings.grpc is not None:
            from .grpc_service import start_grpc  # Envoy's protos load only when gRPC is configured

            self._grpc = await start_grpc(self.settings.grpc, self.decide, self.shared_port)

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
