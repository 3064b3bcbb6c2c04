"""OpaHttpEngine against a scripted HTTP server (answers the real OPA cannot be made to give):
non-JSON, 5xx, unexpected keys, late answers, bounded concurrency. Each failure has its reason code."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from iam_proxy.core.errors import PolicyError
from iam_proxy.policy.engine import decide
from iam_proxy.policy.opa_http import OpaHttpEngine
from iam_proxy.settings.policy import OpaServerSettings


class ScriptedOpa:
    """Answers `POST /v1/data/<path>` with whatever the test scripted for that path."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes, float]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen_auth: list[str | None] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen_auth.append(request.headers.get("authorization"))
        body = await request.json()
        assert "input" in body
        status, payload, delay = self.answers[request.match_info["path"]]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        return web.Response(status=status, body=payload, content_type="application/json")


@pytest.fixture
async def scripted():
    fake = ScriptedOpa()
    app = web.Application()
    app.router.add_post("/v1/data/{path:.*}", fake.handle)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="{}")

    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _engine(url: str, **kw) -> OpaHttpEngine:
    return OpaHttpEngine(OpaServerSettings(url=url, **kw))


@pytest.mark.parametrize("status, payload, reason", [
    (200, b"<html>not json</html>", "policy_malformed"),
    (200, b"{}", "policy_undefined"),
    (200, b'{"decision_id": "x"}', "policy_undefined"),
    (200, b'{"result": null}', "policy_malformed"),
    (200, b'{"result": "true"}', "policy_malformed"),
    (200, b'{"result": {"allowed": "yes"}}', "policy_malformed"),
    (200, b'{"results": true}', "policy_malformed"),
    (200, b"[true]", "policy_malformed"),
    (500, b'{"code": "internal_error"}', "policy_unavailable"),
    (502, b"bad gateway", "policy_unavailable"),
    (503, b"", "policy_unavailable"),
    (404, b"{}", "policy_unavailable"),
    (500, b'{"code": "internal_error", "errors": [{"code": "eval_conflict_error"}]}', "policy_error"),
])
async def test_every_bad_answer_denies_with_its_reason(scripted, status, payload, reason):
    fake, url = scripted
    fake.answers["p/allow"] = (status, payload, 0)
    engine = _engine(url)
    try:
        with pytest.raises(PolicyError) as caught:
            await decide(engine, "p/allow", {"x": 1})
    finally:
        await engine.close()
    assert caught.value.reason == reason
    assert caught.value.status == (503 if reason in ("policy_unavailable", "policy_timeout") else 403)


async def test_good_answers_parse(scripted):
    fake, url = scripted
    fake.answers["p/bool"] = (200, b'{"result": true, "decision_id": "d1"}', 0)
    fake.answers["p/obj"] = (200, b'{"result": {"allowed": false, "reasons": ["no"]}, '
                                  b'"provenance": {"version": "1.22.3", "bundles": {"main": {"revision": "r7"}}}}', 0)
    engine = _engine(url, token="s3cret-token")
    try:
        assert (await decide(engine, "p/bool", {})).decision.allowed is True
        outcome = await decide(engine, "p/obj", {})
    finally:
        await engine.close()
    assert outcome.decision.allowed is False and outcome.decision.reasons == ("no",)
    assert engine.revision == "main:r7"
    assert fake.seen_auth == ["Bearer s3cret-token"] * 2


async def test_late_answer_is_discarded_and_never_answers_the_next_decision(scripted):
    fake, url = scripted
    fake.answers["slow/allow"] = (200, b'{"result": true}', 0.5)
    fake.answers["fast/allow"] = (200, b'{"result": false}', 0)
    engine = _engine(url, timeout_seconds=0.1, max_connections=1)
    try:
        with pytest.raises(PolicyError) as caught:
            await decide(engine, "slow/allow", {})
        assert caught.value.reason == "policy_timeout"
        # Same single pooled connection slot: the late `true` must not be read as this answer.
        assert (await decide(engine, "fast/allow", {})).decision.allowed is False
        await asyncio.sleep(0.5)
        assert (await decide(engine, "fast/allow", {})).decision.allowed is False
    finally:
        await engine.close()


async def test_concurrency_is_bounded_and_waiting_counts_against_the_timeout(scripted):
    fake, url = scripted
    fake.answers["p/allow"] = (200, b'{"result": true}', 0.05)
    engine = _engine(url, max_concurrency=2, timeout_seconds=5)
    try:
        results = await asyncio.gather(*(decide(engine, "p/allow", {}) for _ in range(8)))
        assert all(r.decision.allowed for r in results)
        assert fake.max_in_flight == 2

        fake.answers["p/allow"] = (200, b'{"result": true}', 0.3)
        tight = _engine(url, max_concurrency=1, timeout_seconds=0.4)
        outcomes = await asyncio.gather(*(decide(tight, "p/allow", {}) for _ in range(3)), return_exceptions=True)
        await tight.close()
    finally:
        await engine.close()
    reasons = sorted(o.reason if isinstance(o, PolicyError) else "allowed" for o in outcomes)
    assert reasons == ["allowed", "policy_timeout", "policy_timeout"]


async def test_connection_refused_is_unavailable():
    from support import free_port

    engine = _engine(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(PolicyError) as caught:
            await decide(engine, "p/allow", {})
        assert caught.value.reason == "policy_unavailable"
        assert await engine.check_health() is False
        assert engine.ready is False
    finally:
        await engine.close()
