"""Engine opa-wasm in the real proxy: OPA's compiler to WebAssembly, evaluated in process, on a route."""

from __future__ import annotations

import time

from support import add_policy_route


def test_a_route_on_opa_wasm_decides_caches_and_reloads(proxy_factory, proxy_config, issuer, policy_dir):
    proxy_config["routes"][0]["policy"]["engine"] = "opa-wasm"
    add_policy_route(proxy_config, policy_dir, "tmpl",
                     'deny if $"{input.identity.email}" == "mallory@example.org"\n\nallow if not deny',
                     engine="opa-wasm")
    proxy = proxy_factory(proxy_config)
    alice = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
    bob = {"Authorization": f"Bearer {issuer.token('bob', ['sales'])}"}
    mallory = {"Authorization": f"Bearer {issuer.token('mallory')}"}
    with proxy.client() as c:
        assert [c.get("/api/invoices/1", headers=alice).status_code for _ in range(2)] == [200, 200]
        denied = c.get("/api/invoices/1", headers=bob)
        assert denied.status_code == 403
        assert [c.get("/tmpl/x", headers=who).status_code for who in (mallory, alice)] == [403, 200]
        data = (policy_dir / "rbac" / "data.json").read_text()
        (policy_dir / "rbac" / "data.json").write_text(data.replace('"auditors"', '"sales"'))
        deadline = time.monotonic() + 15  # the public route stays on embedded: two engines reload
        while time.monotonic() < deadline and proxy.metric("iam_proxy_policy_reloads_total", 'result="ok"') < 2:
            time.sleep(0.05)
        assert c.get("/api/invoices/1", headers=bob).status_code == 200
    events = proxy.wait_audit(6, timeout=5)
    # (mallory's decision is undefined: `allow if not deny` without a default; it carries no engine result)
    assert {e["decision"]["engine"] for e in events[:3] + events[4:]} == {"opa-wasm"}
    assert [e["decision"]["cached"] for e in events[:2]] == [False, True]
    assert "user bob may not GET /api/invoices/1" in events[2]["decision"]["reasons"]
