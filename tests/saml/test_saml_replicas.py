"""Two proxy replicas behind one address share sessions and the assertion replay cache in a real
redis-server: a response accepted by one replica is refused as a replay by the other."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from crafting import Captured, assert_refused, capture_login, sign_in_npm_idp
from saml_support import NpmSamlIdP, saml_proxy_config, wait_saml_ready

from support import Process, ProxyProcess, free_port, wait_for_port


@pytest.fixture
def redis_url(tmp_path: Path):
    port = free_port()
    proc = Process([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind",
                    "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], tmp_path / "redis.log")
    wait_for_port(port, proc.proc)
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


def test_a_response_consumed_by_one_replica_is_a_replay_at_the_other(
        tmp_path, saml_proxy_port, upstream, saml_sp_keys, npm_idp: NpmSamlIdP, chromium_browser, redis_url):
    replicas = []
    for name, port in (("a", saml_proxy_port), ("b", free_port())):
        config = saml_proxy_config(port=port, upstream=upstream, tmp=tmp_path / name, sp_keys=saml_sp_keys,
                                   idp={"url": npm_idp.metadata_url}, replay_cache={"store": "redis"})
        # Both replicas serve the same public address (base_url), as behind a load balancer.
        config["authenticators"]["saml"]["base_url"] = f"http://127.0.0.1:{saml_proxy_port}"
        config["sessions"].update({"store": "redis", "redis": {"url": redis_url}})
        (tmp_path / name).mkdir()
        replicas.append(wait_saml_ready(ProxyProcess(config, tmp_path / name, name=f"replica-{name}").wait_ready()))
    a, b = replicas
    try:
        context = chromium_browser.new_context()
        xml, cookie = capture_login(context.new_page(), a, sign_in_npm_idp, "/app/hello")
        context.close()
        at_a = Captured(a, xml, cookie, None, tmp_path, npm_idp.entity_id)
        at_b = Captured(b, xml, cookie, None, tmp_path, npm_idp.entity_id)

        accepted = at_a.post()
        assert accepted.status_code == 303, accepted.text
        session = next(v for v in accepted.headers.get_list("set-cookie") if v.startswith("iam_session="))
        # the session made at replica a works at replica b (Redis session store)
        with httpx.Client(base_url=b.url, timeout=10) as client:
            client.cookies.set("iam_session", session.split(";")[0].split("=", 1)[1])
            assert client.get("/app/hello").status_code == 200
        assert_refused(at_b, at_b.post(), "saml_replayed")
    finally:
        for replica in replicas:
            replica.stop()
