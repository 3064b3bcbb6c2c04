"""`iam-proxy check` warns (exit 0) about browser logins that cannot work: Secure cookies over plain
HTTP by a non-localhost name, and a proxy certificate an IdP cannot verify for back-channel logout.
(Redirect URIs read from a real Keycloak: tests/keycloak/test_kc_check.py.)"""

from __future__ import annotations

import datetime as dt

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iam_proxy.check_warnings import redirect_allowed
from support import REPO, run_cli

SECRET = "check-warnings-session-secret-0123456789"


def _config(tmp_path, **listener) -> str:
    config = {
        "listeners": {"proxy": {"host": "127.0.0.1", "port": 8080, **listener}},
        "identity_providers": [{"id": "kc", "issuer": "https://sso.example.test/realms/acme", "discovery": True,
                                "audiences": ["iam-proxy"], "client": {"client_id": "iam-proxy"}}],
        "authenticators": {"browser": {"type": "oidc_session", "providers": ["kc"]}},
        "sessions": {"secret": SECRET},
        "routes": [{"id": "app", "match": {"path": "/**"}, "upstream": "http://127.0.0.1:9000",
                    "authenticators": ["browser"], "policy": {"path": "iam/authz/decision"}}],
        "policy": {"dir": str(REPO / "policies")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _check(config: str, *urls: str):
    args = [a for url in urls for a in ("--public-url", url)]
    result = run_cli("check", "--config", config, *args)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith(("warning:", "note:"))]


def test_secure_cookies_over_plain_http_by_a_real_name_warn(tmp_path):
    config = _config(tmp_path)
    warned = _check(config, "http://app.example.test")
    assert any(w.startswith("warning: sessions.secure:") and "http://app.example.test" in w
               and "login_state_missing" in w for w in warned)
    assert not any("sessions.secure" in w for w in _check(config, "http://localhost:8080"))
    assert not any("sessions.secure" in w for w in _check(config))  # 127.0.0.1:8080: the browser allows it
    everywhere = _config(tmp_path, host="0.0.0.0")
    assert any("sessions.secure" in w for w in _check(everywhere))


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy.example.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return {"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "key.pem")}


def test_a_self_signed_proxy_certificate_warns_about_backchannel_logout(tmp_path):
    warned = _check(_config(tmp_path, tls=_self_signed(tmp_path)), "https://proxy.example.test")
    assert any(w.startswith("warning: listeners.proxy.tls.cert_file:") and "self-signed" in w
               and "back-channel logout" in w for w in warned)
    assert not any("sessions.secure" in w for w in warned)  # TLS: Secure cookies are fine
    assert any(w.startswith("note: provider kc: redirect URIs") for w in warned)  # skipped, and said so


def test_keycloak_redirect_uri_matching():
    registered = ["https://app.example.test/*", "/rel/*", "https://exact.example.test/.iam/callback"]
    assert redirect_allowed("https://app.example.test/.iam/callback", registered, None)
    assert redirect_allowed("https://exact.example.test/.iam/callback", registered, None)
    assert redirect_allowed("https://root.example.test/rel/.iam/callback", registered, "https://root.example.test")
    assert not redirect_allowed("https://other.example.test/.iam/callback", registered, None)
    assert not redirect_allowed("http://app.example.test/.iam/callback", registered, None)


def test_run_warns_too(tmp_path):
    import subprocess
    import sys

    from support import free_port

    config = yaml.safe_load(open(_config(tmp_path, host="0.0.0.0")).read())
    config["listeners"]["proxy"]["port"] = free_port()
    config["listeners"]["admin"] = {"host": "127.0.0.1", "port": free_port()}
    config["sessions"]["revocation_file"] = str(tmp_path / "revoked")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "iam_proxy", "run", "--config", str(path)], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "sessions.secure" not in line and "listening" not in line:
            line = proc.stderr.readline()
            assert line, "the proxy exited before warning"
        assert "sessions.secure" in line and "WARNING" in line
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_saml_base_url_over_plain_http_warns(tmp_path):
    from iam_proxy.check_warnings import check_warnings
    from iam_proxy.settings import parse_settings

    def settings(base_url: str):
        return parse_settings({
            "authenticators": {"sso": {"type": "saml", "base_url": base_url, "key_file": "/k", "cert_file": "/c",
                                       "idp": {"file": "/idp.xml"}}},
            "sessions": {"secret": SECRET},
            "routes": [{"id": "app", "match": {"path": "/**"}, "upstream": "http://127.0.0.1:9",
                        "authenticators": ["sso"]}]})

    warned = check_warnings(settings("http://sso.example.test"), []).warnings
    assert any(w.startswith("sessions.secure:") and "http://sso.example.test" in w for w in warned)
    assert not check_warnings(settings("https://sso.example.test"), []).warnings
    assert not check_warnings(settings("http://localhost:8080"), []).warnings
