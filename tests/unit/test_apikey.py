"""API keys: the key file, the authenticator, and `iam-proxy apikey create|list|revoke`."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import subprocess

import time

import pytest
import yaml

from iam_proxy.core.redaction import mask_headers
from iam_proxy.authn.apikey import (
    ApiKeyAuthenticator,
    KeyFile,
    create_key,
    digest,
    generate_key,
    parse_expiry,
    pepper_fingerprint,
    revoke_key,
)
from iam_proxy.cli import main
from iam_proxy.context import context_from_scope
from iam_proxy.core.errors import AuthUnavailable, ConfigError, InvalidCredential
from iam_proxy.settings import parse_settings
from iam_proxy.settings.authn import ApiKeyAuthenticatorSettings
from support import PYTHON, REPO

PEPPER = "pepper-for-tests-0123456789"
NOW = dt.datetime.now(dt.timezone.utc)


def request(headers: dict[str, str]):
    return context_from_scope({"type": "http", "method": "GET", "path": "/api/x", "query_string": b"",
                               "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                               "client": ("127.0.0.1", 5000)})


def make_authenticator(path, **settings) -> ApiKeyAuthenticator:
    values = {"type": "apikey", "file": path, "pepper": PEPPER, "reload_interval_seconds": 0} | settings
    return ApiKeyAuthenticator("keys", ApiKeyAuthenticatorSettings.model_validate(values))


@pytest.fixture
def key_file(tmp_path):
    return tmp_path / "keys.yaml"


# ---------------------------------------------------------------- keys and the file


def test_generated_keys_are_unique_and_well_formed():
    keys = {generate_key()[1] for _ in range(200)}
    assert len(keys) == 200
    key_id, key = generate_key()
    prefix, kid, secret = key.split("_", 2)
    assert (prefix, kid) == ("iak", key_id) and len(secret) == 43


def test_file_holds_digests_never_keys(key_file):
    record, key = create_key(key_file, PEPPER, "erp-connector", ["invoices:read"], NOW + dt.timedelta(days=30))
    text = key_file.read_text()
    assert key not in text and key.split("_", 2)[2] not in text
    assert record.digest in text and record.digest == digest(PEPPER, key)
    assert PEPPER not in text and pepper_fingerprint(PEPPER) in text
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    loaded = KeyFile.load(key_file)
    assert loaded.keys == [record]


def test_digest_depends_on_pepper():
    _, key = generate_key()
    assert digest(PEPPER, key) != digest(PEPPER + "x", key)


def test_create_refuses_a_different_pepper(key_file):
    create_key(key_file, PEPPER, "a", [], None)
    with pytest.raises(ValueError, match="pepper does not match"):
        create_key(key_file, "another-pepper-entirely", "b", [], None)


@pytest.mark.parametrize("text,delta", [("90d", dt.timedelta(days=90)), ("12h", dt.timedelta(hours=12)),
                                        ("30m", dt.timedelta(minutes=30))])
def test_parse_expiry_durations(text, delta):
    assert parse_expiry(text, NOW) == NOW + delta


def test_parse_expiry_dates_and_never():
    assert parse_expiry("never") is None
    assert parse_expiry("2999-01-02") == dt.datetime(2999, 1, 2, tzinfo=dt.timezone.utc)
    with pytest.raises(ValueError):
        parse_expiry("2001-01-01")
    with pytest.raises(ValueError):
        parse_expiry("soon")


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(version=2), "not an iam-proxy key file"),
    (lambda d: d["keys"][0].update(id="XYZ"), "keys[0].id"),
    (lambda d: d["keys"][0].update(digest="plain-text-key"), "keys[0].digest"),
    (lambda d: d["keys"].append(dict(d["keys"][0])), "duplicate"),
    (lambda d: d["keys"][0].update(expires_at="tomorrow"), "keys[0].expires_at"),
])
def test_bad_key_files_name_the_problem(key_file, mutate, message):
    create_key(key_file, PEPPER, "a", [], None)
    data = yaml.safe_load(key_file.read_text())
    mutate(data)
    key_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=re.escape(message)):
        KeyFile.load(key_file)


# ---------------------------------------------------------------- the authenticator


async def test_valid_key_yields_identity(key_file):
    expires = (NOW + dt.timedelta(days=1)).replace(microsecond=0)
    record, key = create_key(key_file, PEPPER, "erp-connector", ["invoices:read", "invoices:write"], expires)
    identity = await make_authenticator(key_file).authenticate(request({"x-api-key": key}))
    assert (identity.sub, identity.method, identity.username) == ("erp-connector", "apikey", "erp-connector")
    assert identity.scopes == ("invoices:read", "invoices:write")
    assert identity.expires_at == int(expires.timestamp())
    assert identity.attributes == {"api_key_id": record.id}


@pytest.mark.parametrize("mangle,reason", [
    (lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), "apikey_invalid"),  # right id, wrong secret
    (lambda k: "iak_000000000000_" + k.split("_", 2)[2], "apikey_invalid"),  # unknown id
    (lambda k: k + "x", "apikey_malformed"),
    (lambda k: "not-a-key", "apikey_malformed"),
    (lambda k: k.upper(), "apikey_malformed"),
])
async def test_wrong_keys_are_refused(key_file, mangle, reason):
    _, key = create_key(key_file, PEPPER, "erp", [], None)
    with pytest.raises(InvalidCredential) as caught:
        await make_authenticator(key_file).authenticate(request({"x-api-key": mangle(key)}))
    assert caught.value.reason == reason


async def test_expired_and_revoked_keys_are_refused(key_file):
    expired, expired_key = create_key(key_file, PEPPER, "old", [], NOW + dt.timedelta(days=1))
    revoked, revoked_key = create_key(key_file, PEPPER, "gone", [], None)
    revoke_key(key_file, revoked.id)
    auth = make_authenticator(key_file, reload_interval_seconds=0)
    auth._clock = lambda: (NOW + dt.timedelta(days=2)).timestamp()
    for key, reason in ((expired_key, "apikey_expired"), (revoked_key, "apikey_revoked")):
        with pytest.raises(InvalidCredential) as caught:
            await auth.authenticate(request({"x-api-key": key}))
        assert caught.value.reason == reason


async def test_wrong_pepper_in_config_is_a_config_error(key_file):
    create_key(key_file, PEPPER, "a", [], None)
    with pytest.raises(ConfigError, match=r"authenticators\.keys\.file: .*pepper"):
        make_authenticator(key_file, pepper="a-different-pepper-value")


async def test_missing_key_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"authenticators\.keys\.file"):
        make_authenticator(tmp_path / "absent.yaml")


async def test_no_header_or_other_scheme_is_not_mine(key_file):
    _, key = create_key(key_file, PEPPER, "erp", [], None)
    plain = make_authenticator(key_file)
    assert await plain.authenticate(request({"authorization": f"Bearer {key}"})) is None
    schemed = make_authenticator(key_file, header="Authorization", scheme="ApiKey")
    assert await schemed.authenticate(request({"authorization": "Bearer abc"})) is None
    assert await schemed.authenticate(request({"authorization": "Basic YTpi"})) is None
    identity = await schemed.authenticate(request({"authorization": f"ApiKey {key}"}))
    assert identity.sub == "erp"
    with pytest.raises(InvalidCredential):
        await schemed.authenticate(request({"authorization": "ApiKey "}))


async def test_a_custom_key_header_is_masked_in_audit_input(key_file):
    _, key = create_key(key_file, PEPPER, "erp", [], None)
    auth = make_authenticator(key_file, header="X-Partner-Key")
    assert (await auth.authenticate(request({"x-partner-key": key}))).sub == "erp"
    assert mask_headers({"x-partner-key": key, "accept": "*/*"}) == {"x-partner-key": "***", "accept": "*/*"}


def test_authorization_header_needs_a_scheme(key_file):
    with pytest.raises(ValueError, match="needs a scheme"):
        ApiKeyAuthenticatorSettings(type="apikey", file=key_file, pepper=PEPPER, header="Authorization")


def test_short_pepper_is_refused(key_file):
    with pytest.raises(ValueError):
        ApiKeyAuthenticatorSettings(type="apikey", file=key_file, pepper="short")


async def test_key_file_is_reloaded_on_change(key_file):
    _, first = create_key(key_file, PEPPER, "first", [], None)
    auth = make_authenticator(key_file, reload_interval_seconds=0.01)
    assert (await auth.authenticate(request({"x-api-key": first}))).sub == "first"
    second_record, second = create_key(key_file, PEPPER, "second", [], None)
    time.sleep(0.02)  # past the reload interval: the next request looks at the file again
    assert (await auth.authenticate(request({"x-api-key": second}))).sub == "second"
    revoke_key(key_file, second_record.id)
    time.sleep(0.02)
    with pytest.raises(InvalidCredential):
        await auth.authenticate(request({"x-api-key": second}))


async def test_unloadable_key_file_refuses_every_key_until_fixed(key_file):
    _, key = create_key(key_file, PEPPER, "erp", [], None)
    good = key_file.read_text()
    auth = make_authenticator(key_file, reload_interval_seconds=0.01)
    key_file.write_text("version: 1\nkeys: [this is: not valid")
    time.sleep(0.02)
    with pytest.raises(AuthUnavailable) as caught:
        await auth.authenticate(request({"x-api-key": key}))
    assert caught.value.status == 503 and caught.value.reason == "apikey_store_unavailable"
    key_file.write_text(good)
    time.sleep(0.02)
    assert (await auth.authenticate(request({"x-api-key": key}))).sub == "erp"


def test_settings_accept_apikey_and_ldap_configs(tmp_path):
    raw = {
        "directories": [{"id": "corp", "urls": ["ldaps://ldap.example.org"], "user_base_dn": "dc=example,dc=org",
                         "bind_dn": "cn=reader,dc=example,dc=org", "bind_password": "${LDAP_PW:-x}"}],
        "authenticators": {"keys": {"type": "apikey", "file": str(tmp_path / "k.yaml"), "pepper": PEPPER},
                           "basic": {"type": "ldap", "directory": "corp"}},
        "enrichers": {"groups": {"type": "ldap", "directory": "corp"}},
        "routes": [{"id": "r", "upstream": "http://127.0.0.1:1", "authenticators": ["keys", "basic"],
                    "enrichers": ["groups"]}],
    }
    settings = parse_settings(raw)
    assert settings.routes[0].enrichers == ["groups"]
    assert "pepper-for-tests" not in repr(settings)


# ---------------------------------------------------------------- the CLI


def cli(capsys, monkeypatch, *args: str, pepper: str | None = None) -> tuple[int, str, str]:
    """`iam-proxy apikey ...` in this process (the subprocess test below covers the real entry point)."""
    if pepper is None:
        monkeypatch.delenv("IAM_PROXY_APIKEY_PEPPER", raising=False)
    else:
        monkeypatch.setenv("IAM_PROXY_APIKEY_PEPPER", pepper)
    code = main(["apikey", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_create_prints_the_key_once(key_file):
    created = subprocess.run([PYTHON, "-m", "iam_proxy", "apikey", "create", "--file", str(key_file),
                              "--owner", "erp-connector", "--scope", "invoices:read", "--expires", "30d"],
                             capture_output=True, text=True, cwd=REPO, timeout=60,
                             env={**os.environ, "IAM_PROXY_APIKEY_PEPPER": PEPPER})
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("iak_") and "shown only this once" in created.stderr
    assert key not in key_file.read_text()
    assert [k.owner for k in KeyFile.load(key_file).keys] == ["erp-connector"]


def test_cli_create_list_revoke(key_file, capsys, monkeypatch):
    code, out, err = cli(capsys, monkeypatch, "create", "--file", str(key_file), "--owner", "erp-connector",
                         "--scope", "invoices:read", "--scope", "invoices:write", "--expires", "30d", pepper=PEPPER)
    assert code == 0, err
    key = out.strip()
    key_id = key.split("_")[1]

    code, out, _ = cli(capsys, monkeypatch, "list", "--file", str(key_file), "--json")
    rows = json.loads(out)
    assert [(r["id"], r["owner"], r["status"], r["scopes"]) for r in rows] == [
        (key_id, "erp-connector", "active", ["invoices:read", "invoices:write"])]
    assert "digest" not in rows[0] and key not in out

    code, out, err = cli(capsys, monkeypatch, "revoke", "--file", str(key_file), "--id", key_id)  # no pepper
    assert code == 0, err
    code, out, _ = cli(capsys, monkeypatch, "list", "--file", str(key_file))
    assert key_id in out and "revoked" in out


def test_cli_errors_exit_2(key_file, capsys, monkeypatch):
    code, _, err = cli(capsys, monkeypatch, "create", "--file", str(key_file), "--owner", "x")
    assert code == 2 and "IAM_PROXY_APIKEY_PEPPER" in err
    code, _, _ = cli(capsys, monkeypatch, "revoke", "--file", str(key_file), "--id", "000000000000")
    assert code == 2
    code, _, err = cli(capsys, monkeypatch, "create", "--file", str(key_file), "--owner", "x",
                       "--expires", "2001-01-01", pepper=PEPPER)
    assert code == 2 and "future" in err


def test_check_refuses_a_key_file_made_with_another_pepper(key_file, tmp_path, capsys):
    create_key(key_file, "some-other-pepper-value", "erp", [], None)
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({
        "authenticators": {"keys": {"type": "apikey", "file": str(key_file), "pepper": PEPPER}},
        "routes": [{"id": "r", "upstream": "http://127.0.0.1:1", "authenticators": ["keys"]}],
    }))
    assert main(["check", "--config", str(config)]) == 2
    assert "authenticators.keys.file" in capsys.readouterr().err
