"""bench.extauthz_floor in a tiny mode: the three servers answer every check, and the results
have their shape. No numbers are judged here (docs/performance.md quotes a full run)."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest
import uvloop

from bench import extauthz_floor
from support import PYTHON, REPO, free_port, wait_for_port


def test_a_tiny_run_writes_every_variant(tmp_path):
    proc = subprocess.run([PYTHON, "-m", "bench.extauthz_floor", "--seconds", "1", "--rounds", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "extauthz-floor.json").read_text())
    assert [row["name"] for row in result["rows"]] == ["grpc-empty", "grpc-front-door", "http-front-door"]
    for row in result["rows"]:
        assert row["checks_per_s"] > 0 and row["cpu_us_per_check"] > 0 and len(row["runs"]) == 1
    table = (tmp_path / "extauthz-floor.md").read_text()
    assert "| grpc-front-door |" in table and "16 checks in flight" in table


@pytest.mark.parametrize("variant", ["grpc-empty", "grpc-front-door"])
def test_the_grpc_servers_answer_what_they_claim(variant, tmp_path):
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([PYTHON, "-m", "bench.extauthz_floor", "--serve", variant, "--port", str(port)],
                                  cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, server)

            async def one() -> object:
                from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc

                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    return await pb_grpc.AuthorizationStub(channel).Check(extauthz_floor._check_request(), timeout=5)

            response = uvloop.run(one())
        finally:
            server.terminate()
            server.wait(10)
    assert response.status.code == 0
    headers = {h.header.key: h.header.value for h in response.ok_response.headers}
    if variant == "grpc-front-door":  # iam-proxy's service: the Verdict written as Envoy reads it
        assert headers["x-forwarded-user"] == "alice" and len(headers["x-iam-assertion"]) == 480
        assert list(response.ok_response.headers_to_remove) == ["authorization"]
    else:
        assert headers == {}
