"""The decision cache in the real proxy: hits are marked and counted, a policy edit invalidates at
once, and a policy that reads the clock is never cached."""

from __future__ import annotations

import time

from support import add_policy_route


def test_cached_decisions_are_marked_counted_and_invalidated_by_a_policy_edit(proxy_factory, proxy_config,
                                                                                issuer, policy_dir):
    proxy_config["routes"][0]["policy"]["cache"] = True
    proxy = proxy_factory(proxy_config)
    bob = {"Authorization": f"Bearer {issuer.token('bob', ['sales'])}"}
    with proxy.client() as c:
        first = [c.get("/api/invoices/1", headers={**bob, "X-Request-Id": f"req-{i}"}).status_code for i in range(3)]
        assert first == [403, 403, 403]
        assert proxy.metric("iam_proxy_decision_cache_total", 'result="hit"') == 2
        assert proxy.metric("iam_proxy_decision_cache_total", 'result="miss"') == 1

        # Sales may now read invoices: the very next decision after the reload uses the new revision.
        data = (policy_dir / "rbac" / "data.json").read_text()
        (policy_dir / "rbac" / "data.json").write_text(data.replace('"auditors"', '"sales"'))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proxy.metric("iam_proxy_policy_reloads_total", 'result="ok"') < 1:
            time.sleep(0.05)
        assert c.get("/api/invoices/1", headers=bob).status_code == 200
        assert c.get("/api/invoices/1", headers=bob).status_code == 200
    events = proxy.wait_audit(5, timeout=5)
    assert [e["decision"]["cached"] for e in events] == [False, True, True, False, True]
    assert events[1]["decision"]["revision"] == events[0]["decision"]["revision"]
    assert events[3]["decision"]["revision"] != events[0]["decision"]["revision"]
    assert [e["request_id"] for e in events[:3]] == ["req-0", "req-1", "req-2"]


def test_a_policy_that_reads_the_clock_is_never_cached(proxy_factory, proxy_config, issuer, policy_dir):
    add_policy_route(proxy_config, policy_dir, "clock", "import rego.v1\n\nallow if time.now_ns() > 0", cache=True)
    proxy = proxy_factory(proxy_config)
    token = {"Authorization": f"Bearer {issuer.token('alice')}"}
    with proxy.client() as c:
        assert [c.get("/clock/x", headers=token).status_code for _ in range(2)] == [200, 200]
    assert [e["decision"]["cached"] for e in proxy.wait_audit(2, timeout=5)] == [False, False]
    assert proxy.metric("iam_proxy_decision_cache_total", 'result="hit"') == 0
    assert "decision cache off" in proxy.process.logs()
    assert "clock.rego:5: time.now_ns" in proxy.process.logs()


def test_by_default_requests_that_differ_only_in_what_no_rule_reads_share_one_decision(
        proxy_factory, proxy_config, issuer):
    proxy_config["routes"][0]["policy"].pop("cache", None)  # the default: on for the embedded engine
    proxy = proxy_factory(proxy_config)
    alice = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
    with proxy.client() as c:
        statuses = [c.get("/api/invoices/1", headers={**alice, "X-Unread": str(i), "User-Agent": f"ua-{i}"}).status_code
                    for i in range(3)]
        statuses.append(c.get("/api/invoices/2", headers=alice).status_code)  # the path is read: a new entry
    assert statuses == [200, 200, 200, 200]
    assert [e["decision"]["cached"] for e in proxy.wait_audit(4, timeout=5)] == [False, True, True, False]
    assert proxy.metric("iam_proxy_decision_cache_total", 'result="hit"') == 2
