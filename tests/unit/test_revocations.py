"""The revocation list on file: what one process ends, another process on the host refuses, also
after a restart; entries leave with the sessions they name. (Redis: tests/keycloak/test_kc_logout_durable.py.)"""

from __future__ import annotations

from pathlib import Path

from iam_proxy.authn.identity import Identity
from iam_proxy.session import build_session_manager
from iam_proxy.session.revocations import FileRevocations
from iam_proxy.settings import SessionSettings

SECRET = "unit-test-session-secret-0123456789abcdef"
ALICE = Identity(sub="alice-id", method="oidc", username="alice", provider="kc")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _manager(path: Path, clock=None):
    settings = SessionSettings(secret=SECRET, revocation_file=path, lifetime_seconds=3600)
    return build_session_manager(settings, **({"clock": clock} if clock else {}))


def _headers(set_cookie: str) -> dict[str, str]:
    return {"cookie": set_cookie.split(";", 1)[0]}


async def test_logout_is_refused_by_another_process_and_after_a_restart(tmp_path):
    path = tmp_path / "state" / "revoked.jsonl"
    one, other = _manager(path), _manager(path)  # two workers of one host
    session, cookie = await one.create(identity=ALICE, provider="kc", protocol="oidc")
    _, kept = await one.create(identity=ALICE, provider="kc", protocol="oidc")
    assert (await other.lookup(_headers(cookie)))[0] is not None
    await one.destroy(session)
    assert await other.lookup(_headers(cookie)) == (None, "session_revoked")
    restarted = _manager(path)
    assert await restarted.lookup(_headers(cookie)) == (None, "session_revoked")
    assert (await restarted.lookup(_headers(kept)))[0] is not None  # only the ended one
    assert await restarted.lookup({}) == (None, None)  # no cookie is not "revoked"


async def test_backchannel_logout_counts_live_sessions_and_ends_them_everywhere(tmp_path):
    path = tmp_path / "revoked.jsonl"
    one, other = _manager(path), _manager(path)
    _, c1 = await one.create(identity=ALICE, provider="kc", protocol="oidc", idp_session_id="sid-1")
    _, c2 = await other.create(identity=ALICE, provider="kc", protocol="oidc", idp_session_id="sid-1")
    _, c3 = await one.create(identity=ALICE, provider="kc", protocol="oidc", idp_session_id="sid-2")
    assert await other.end_idp_session("kc", idp_session_id="sid-1") == 2
    assert await other.end_idp_session("kc", idp_session_id="sid-1") == 0  # already ended
    for cookie in (c1, c2):
        assert await _manager(path).lookup(_headers(cookie)) == (None, "session_revoked")
    assert (await one.lookup(_headers(c3)))[0] is not None
    assert await one.end_idp_session("kc", sub="alice-id") == 1
    assert await other.lookup(_headers(c3)) == (None, "session_revoked")
    _, later = await one.create(identity=ALICE, provider="kc", protocol="oidc")
    assert (await other.lookup(_headers(later)))[0] is not None  # a later login of the subject works


async def test_expired_entries_are_dropped_and_the_file_stays_bounded(tmp_path):
    path, clock = tmp_path / "revoked.jsonl", Clock()
    manager = _manager(path, clock)
    for _ in range(600):
        session, _ = await manager.create(identity=ALICE, provider="kc", protocol="oidc")
        await manager.destroy(session)
    lines_before = len(path.read_text().splitlines())
    assert lines_before == 1200  # issued + ended, nothing expired yet
    clock.now += 3601  # every session has expired
    session, cookie = await manager.create(identity=ALICE, provider="kc", protocol="oidc")
    await manager.destroy(session)
    lines_after = path.read_text().splitlines()
    assert len(lines_after) == 2  # only the fresh session: issued, then ended
    assert await FileRevocations(path, clock).is_ended(session.id, None)


async def test_an_expired_cookie_says_so(tmp_path):
    clock = Clock()
    manager = _manager(tmp_path / "revoked.jsonl", clock)
    _, cookie = await manager.create(identity=ALICE, provider="kc", protocol="oidc")
    clock.now += 3601
    assert await manager.lookup(_headers(cookie)) == (None, "session_expired")


async def test_a_compaction_by_another_process_is_followed(tmp_path):
    path, clock = tmp_path / "revoked.jsonl", Clock()
    reader, writer = _manager(path, clock), _manager(path, clock)
    for _ in range(600):
        session, _ = await writer.create(identity=ALICE, provider="kc", protocol="oidc")
        await writer.destroy(session)
    assert (await reader.lookup({}))[1] is None
    await reader.revocations.is_ended("x", None)  # the reader has read every line
    clock.now += 3601
    session, cookie = await writer.create(identity=ALICE, provider="kc", protocol="oidc")  # compacts
    await writer.destroy(session)
    assert len(path.read_text().splitlines()) == 2  # smaller than what the reader had read
    assert await reader.lookup(_headers(cookie)) == (None, "session_revoked")


def test_an_unusable_revocation_file_is_a_config_error_naming_the_key(tmp_path):
    import pytest

    from iam_proxy.errors import ConfigError

    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="sessions.revocation_file: .*a-file/revoked"):
        _manager(tmp_path / "a-file" / "revoked")
    assert (tmp_path / "r.jsonl").exists() is False
    _manager(tmp_path / "r.jsonl")
    assert oct((tmp_path / "r.jsonl").stat().st_mode & 0o777) == "0o600"
