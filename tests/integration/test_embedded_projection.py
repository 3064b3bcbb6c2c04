"""The input the in-process engines are handed (and the cache key) covers every way a policy reads it,
checked through the real proxy: a read hidden in a template string must not turn a deny into an allow."""

from __future__ import annotations

import json

import pytest

from support import add_policy_route


@pytest.mark.parametrize("engine", ["embedded", "opa-lib"])
def test_a_deny_written_with_a_template_string_denies_mallory(proxy_factory, proxy_config, issuer, policy_dir, engine):
    add_policy_route(proxy_config, policy_dir, "tmpl",
                     'deny if $"{input.identity.email}" == "mallory@example.org"\n\nallow if not deny', cache=True,
                     engine=engine)
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        mallory = {"Authorization": f"Bearer {issuer.token('mallory')}"}
        alice = {"Authorization": f"Bearer {issuer.token('alice')}"}
        statuses = [c.get("/tmpl/x", headers=mallory).status_code, c.get("/tmpl/x", headers=alice).status_code,
                    c.get("/tmpl/x", headers=mallory).status_code]
    # identity.email is read by no other shipped policy: only the template string reads it
    assert statuses == [403, 200, 403]
    events = [json.loads(line) for line in open(proxy_config["audit"]["sinks"][0]["path"])]
    assert [e["decision"]["engine"] for e in events if e["decision"]["allowed"]] == [engine]
