"""Real peers for the browser sign-in tests: one Keycloak for the whole session (two realms imported
from this folder), Redis for shared sessions, Debian's Chromium driven by Playwright, and the proxy
listening with TLS from a session dev CA (a `__Host-` cookie needs HTTPS).

Keycloak comes from `scripts/install-peers.sh` (`mvn dependency:copy` into ~/.cache/iam-proxy); a
missing Keycloak, Redis or Chromium fails the tests, it never skips them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from iam_proxy.devcerts import issue_cert
from kc_support import ADMIN_PASSWORD, ARTIFACTS, CHROMIUM, SESSION_SECRET
from support import REPO, Process, ProxyProcess, free_port, wait_for_port

HERE = Path(__file__).resolve().parent
POLICY = """package kc.authz

import rego.v1

decision := {"allowed": true, "reasons": ["member of the route's group"]} if {
	input.identity.groups[_] == input.route.labels.group
} else := {"allowed": true, "reasons": ["signed in"]} if {
	not input.route.labels.group
} else := {"allowed": false, "reasons": ["not a member of the route's group"]}
"""


def _versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "scripts" / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


KEYCLOAK_VERSION = _versions()["KEYCLOAK_VERSION"]
KEYCLOAK_HOME = Path(os.environ.get("IAM_PROXY_TOOLS", Path.home() / ".cache" / "iam-proxy")) / \
    f"keycloak-{KEYCLOAK_VERSION}"


# ---------------------------------------------------------------- TLS for the proxy


class DevTLS:
    """A session CA and a server certificate for 127.0.0.1, as files."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "server.pem").exists():  # reuse (a running Keycloak already trusts this CA)
            self.ca_file, self.cert_file = directory / "ca.pem", directory / "server.pem"
            self.key_file = directory / "server.key"
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            self.spki_sha256 = _spki_sha256(cert)
            return
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = issue_cert("iam-proxy test CA", ca_key, None, None, ca=True, days=2)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue_cert("127.0.0.1", key, ca, ca_key, ips=("127.0.0.1",), dns=("localhost",), days=2,
                          eku=[ExtendedKeyUsageOID.SERVER_AUTH])
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        self.key_file.chmod(0o600)
        self.spki_sha256 = _spki_sha256(cert)


def _spki_sha256(cert: x509.Certificate) -> str:
    """Chromium trusts exactly this key (--ignore-certificate-errors-spki-list), nothing more."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="session")
def dev_tls(session_tmp: Path) -> DevTLS:
    # With IAM_PROXY_TEST_KEYCLOAK_URL (a Keycloak started by hand), IAM_PROXY_TEST_KEYCLOAK_TLS_DIR
    # names the CA it was started to trust (--truststore-paths), for back-channel logout.
    return DevTLS(Path(os.environ.get("IAM_PROXY_TEST_KEYCLOAK_TLS_DIR") or session_tmp / "kc-tls"))


# ---------------------------------------------------------------- Keycloak


class Keycloak:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def issuer(self, realm: str) -> str:
        return f"{self.base_url}/realms/{realm}"

    def admin(self, realm: str):
        from keycloak import KeycloakAdmin

        return KeycloakAdmin(server_url=self.base_url + "/", username="admin", password=ADMIN_PASSWORD,
                             realm_name=realm, user_realm_name="master", timeout=20)

    def register_proxy(self, realm: str, *proxy_urls: str, client_id: str = "iam-proxy") -> None:
        """Point the realm's proxy client at this test's proxies (their ports are chosen per test).
        Back-channel logout goes to the first one."""
        admin = self.admin(realm)
        cid = admin.get_client_id(client_id)
        client = admin.get_client(cid)
        client["redirectUris"] = [f"{url}/.iam/callback" for url in proxy_urls]
        client["attributes"] = {**client.get("attributes", {}),
                                "post.logout.redirect.uris": "##".join(f"{url}/.iam/signed-out" for url in proxy_urls),
                                "backchannel.logout.url": f"{proxy_urls[0]}/.iam/backchannel-logout"}
        admin.update_client(cid, client)

    def password_grant(self, realm: str, username: str, password: str, client_id: str = "iam-proxy",
                       client_secret: str = "iam-proxy-test-secret") -> dict[str, Any]:
        r = httpx.post(f"{self.issuer(realm)}/protocol/openid-connect/token", timeout=20,
                       data={"grant_type": "password", "username": username, "password": password,
                             "scope": "openid", "client_id": client_id, "client_secret": client_secret})
        r.raise_for_status()
        return r.json()


def _start_keycloak(tmp: Path, dev_tls: DevTLS) -> tuple[Process, Keycloak]:
    kc_sh = KEYCLOAK_HOME / "bin" / "kc.sh"
    if not kc_sh.exists():
        pytest.fail(f"Keycloak {KEYCLOAK_VERSION} is not installed at {KEYCLOAK_HOME}: run scripts/install-peers.sh")
    # start-dev --import-realm reads <home>/data/import; the database itself lives in this test's tmp dir.
    import_dir = KEYCLOAK_HOME / "data" / "import"
    import_dir.mkdir(parents=True, exist_ok=True)
    for realm in ("realm.json", "realm-partner.json"):
        shutil.copyfile(HERE / realm, import_dir / realm)
    port, management = free_port(), free_port()
    argv = [str(kc_sh), "start-dev", "--http-host=127.0.0.1", f"--http-port={port}",
            f"--http-management-port={management}", "--health-enabled=true", "--import-realm",
            "--db=dev-file", f"--db-url=jdbc:h2:file:{tmp}/keycloak-db/keycloak;NON_KEYWORDS=VALUE",
            f"--truststore-paths={dev_tls.ca_file}", "--log-level=WARN,org.keycloak.services:INFO",
            # the Shared Signals transmitter (experimental in 26.7) for test_kc_ssf.py; it pushes to the
            # proxies' loopback addresses, which it refuses unless told this is a closed network
            "--features=ssf", "--spi-ssf-transmitter--default--allow-insecure-push-targets=true",
            # pushes leave through an outbox drained every 30 s by default
            "--spi-ssf-transmitter--default--outbox-drainer-interval=1s"]
    proc = Process(argv, tmp / "keycloak.log", env={"KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
                                                    "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            pytest.fail(f"Keycloak exited with {proc.proc.returncode}:\n{proc.logs()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{management}/health/ready", timeout=2).status_code == 200:
                return proc, Keycloak(f"http://127.0.0.1:{port}")
        except httpx.HTTPError:
            pass
        time.sleep(1)
    logs = proc.logs()[-3000:]
    proc.stop()
    pytest.fail(f"Keycloak not ready after 240s:\n{logs}")


@pytest.fixture(scope="session")
def keycloak(session_tmp: Path, dev_tls: DevTLS) -> Iterator[Keycloak]:
    """One Keycloak for the session. IAM_PROXY_TEST_KEYCLOAK_URL reuses a running one (local iteration;
    it must have imported this folder's realms, trust dev CAs for back-channel logout, and run with the
    options of _start_keycloak's last line for the shared signals tests)."""
    external = os.environ.get("IAM_PROXY_TEST_KEYCLOAK_URL")
    if external:
        yield Keycloak(external)
        return
    proc, kc = _start_keycloak(session_tmp, dev_tls)
    yield kc
    proc.stop()


# ---------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url(session_tmp: Path) -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.fail("redis-server is not installed: run scripts/install-peers.sh")
    port = free_port()
    data = session_tmp / "redis"
    data.mkdir(exist_ok=True)
    proc = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(data)], session_tmp / "redis.log")
    wait_for_port(port, proc.proc)
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


# ---------------------------------------------------------------- the browser


# Module scope: a running sync Playwright owns the main thread's event loop, so it must not outlive
# the modules that use it (later tests call asyncio.run, and the SAML tests start their own).
@pytest.fixture(scope="module")
def chromium(dev_tls: DevTLS) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-peers.sh (Debian package chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run",
                  f"--ignore-certificate-errors-spki-list={dev_tls.spki_sha256}"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, kc_proxy_factory) -> Iterator[Any]:
    # Set up after (so torn down before) the test's proxies: closing the context closes the browser's
    # keep-alive connections, and the proxies then stop at once instead of waiting for them.
    context = chromium.new_context(viewport={"width": 412, "height": 860})  # a phone-sized window
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


# ---------------------------------------------------------------- the proxy


@pytest.fixture
def kc_policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "kc-policies"
    directory.mkdir()
    (directory / "kc.rego").write_text(POLICY)
    return directory


def kc_config(keycloak: Keycloak, dev_tls: DevTLS, upstream: str, policy_dir: Path, audit_path: Path,
              **sessions: Any) -> dict[str, Any]:
    def provider(pid: str, realm: str, secret: str, display: str) -> dict[str, Any]:
        return {"id": pid, "issuer": keycloak.issuer(realm), "discovery": True, "audiences": ["iam-proxy"],
                "jwks_min_refetch_seconds": 0, "preset": {"name": "keycloak", "client_id": "iam-proxy"},
                "client": {"client_id": "iam-proxy", "client_secret": secret, "display_name": display}}

    introspector = {"id": "kc-introspection", "issuer": keycloak.issuer("iam-test"), "discovery": True,
                    "audiences": ["iam-proxy"], "preset": {"name": "keycloak", "client_id": "iam-proxy"},
                    "client": {"client_id": "iam-introspector", "client_secret": "iam-introspector-test-secret"}}
    policy = {"path": "kc/authz/decision"}
    return {
        "listeners": {"proxy": {"host": "127.0.0.1", "port": free_port(),
                                "tls": {"cert_file": str(dev_tls.cert_file), "key_file": str(dev_tls.key_file)}},
                      "admin": {"host": "127.0.0.1", "port": free_port()}},
        "identity_providers": [provider("kc", "iam-test", "iam-proxy-test-secret", "Staff (Keycloak)"),
                               provider("partner", "iam-partner", "iam-proxy-partner-secret", "Partner (Keycloak)"),
                               introspector],
        "authenticators": {
            "staff_bearer": {"type": "jwt", "providers": ["kc"]},
            "staff_browser": {"type": "oidc_session", "providers": ["kc"], "refresh_after_seconds": 300},
            "any_browser": {"type": "oidc_session", "providers": ["kc", "partner"]},
            "opaque": {"type": "introspection", "provider": "kc-introspection", "audiences": ["iam-proxy"],
                       "cache_ttl_seconds": 2},
        },
        "sessions": {"secret": SESSION_SECRET, "revocation_file": str(audit_path.parent / "revoked-sessions.jsonl"),
                     **sessions},
        "routes": [
            {"id": "finance", "match": {"path": "/finance/**"}, "upstream": upstream,
             "authenticators": ["staff_bearer", "staff_browser"], "policy": policy, "labels": {"group": "finance"}},
            {"id": "portal-app", "match": {"path": "/partners/**"}, "upstream": upstream,
             "authenticators": ["any_browser"], "policy": policy},
            {"id": "opaque", "match": {"path": "/opaque/**"}, "upstream": upstream,
             "authenticators": ["opaque"], "policy": policy},
        ],
        "policy": {"dir": str(policy_dir), "reload_interval_seconds": 0},
        "audit": {"sinks": [{"type": "file", "path": str(audit_path)}]},
    }


@pytest.fixture
def kc_base_config(keycloak, dev_tls, upstream, kc_policy_dir, tmp_path) -> dict[str, Any]:
    """A proxy config wired to the session Keycloak, for tests that run the CLI on it (not a process)."""
    return kc_config(keycloak, dev_tls, upstream, kc_policy_dir, tmp_path / "audit.jsonl")


@pytest.fixture(scope="session")
def keycloak_bin() -> Path:
    """kc.sh and kcadm.sh of the Keycloak the tests run."""
    return KEYCLOAK_HOME / "bin"


class KeycloakProxy:
    def __init__(self, process: ProxyProcess) -> None:
        self.process = process
        self.url = f"https://127.0.0.1:{process.port}"

    def client(self, dev_tls: DevTLS, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(dev_tls.ca_file)),
                            timeout=20, **kw)

    def audit_events(self) -> list[dict[str, Any]]:
        return self.process.audit_events()


@pytest.fixture
def kc_proxy_factory(keycloak, dev_tls, upstream, kc_policy_dir, tmp_path,
                     proxy_factory) -> Callable[..., KeycloakProxy]:
    """Starts a proxy (TLS) wired to the session Keycloak; `tweak(config)` may change the config first."""
    count = 0

    def start(tweak: Callable[[dict[str, Any]], None] | None = None, register: bool = True,
              **sessions: Any) -> KeycloakProxy:
        nonlocal count
        count += 1
        config = kc_config(keycloak, dev_tls, upstream, kc_policy_dir, tmp_path / f"audit-{count}.jsonl", **sessions)
        if tweak is not None:
            tweak(config)
        proxy = KeycloakProxy(proxy_factory(config, name=f"kc-proxy-{count}"))
        if register:
            for realm in ("iam-test", "iam-partner"):
                keycloak.register_proxy(realm, proxy.url)
        return proxy

    return start
