"""Policy bundles built and signed by the real `opa build`: RS256/ES256/HS256 signatures verified,
unsigned and tampered bundles refused (the last good one kept), file and HTTP (ETag) sources, and
the active revision in every audit event."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from iam_proxy.ops.metrics import Metrics
from iam_proxy.policy.bundle import BundleRefused, SignatureVerifier, file_digest, read_bundle
from iam_proxy.policy.runtime import PolicyRuntime
from iam_proxy.policy.source import PolicyLoadError
from iam_proxy.settings import parse_settings
from iam_proxy.settings.policy import BundleVerificationSettings
from support import REPO, ProxyProcess, opa_binary

pytestmark = pytest.mark.peer("opa")

SECRET = "a-shared-bundle-signing-secret-of-enough-length"


def _keypair(directory: Path, kind: str) -> tuple[Path, Path]:
    private = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    priv, pub = directory / f"{kind}-private.pem", directory / f"{kind}-public.pem"
    priv.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    pub.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def opa_build(source: Path, out: Path, revision: str, *signing: str) -> bytes:
    """`opa build --bundle` (optionally signed), run inside `source` so file names are relative."""
    subprocess.run([opa_binary(), "build", "--bundle", ".", "-r", revision, "-o", str(out), *signing],
                   cwd=source, check=True, capture_output=True, timeout=60)
    return out.read_bytes()


def retar(bundle: bytes, change: dict[str, bytes | None]) -> bytes:
    """The same bundle with members replaced, added (new name) or removed (None)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        names = []
        for member in src:
            name = member.name.lstrip("/")
            names.append(name)
            content = change.get(name, src.extractfile(member).read())
            if content is None:
                continue
            info = tarfile.TarInfo(member.name)
            info.size = len(content)
            dst.addfile(info, io.BytesIO(content))
        for name, content in change.items():
            if name not in names and content is not None:
                info = tarfile.TarInfo("/" + name)
                info.size = len(content)
                dst.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The shipped policies plus a data document with JSON that is easy to hash wrongly."""
    target = tmp_path / "bundle-src"
    shutil.copytree(REPO / "policies", target)
    (target / "tricky").mkdir()
    (target / "tricky" / "data.json").write_text(
        '{"n": 1.50, "e": 1e3, "neg": -0, "s": "<a&b> \\u00e9 \\u2028 \\t \\u0001", "z": [true, null, {"b": 1, "a": 2}]}')
    return target


@pytest.fixture
def rsa_keys(tmp_path: Path) -> tuple[Path, Path]:
    return _keypair(tmp_path, "rsa")


def _verifier(**kw) -> SignatureVerifier:
    return SignatureVerifier(BundleVerificationSettings(**kw))


def test_rs256_es256_hs256_bundles_signed_by_opa_verify(source, tmp_path, rsa_keys):
    rsa_private, rsa_public = rsa_keys
    ec_private, ec_public = _keypair(tmp_path, "ec")
    cases = [
        ("RS256", ["--signing-key", str(rsa_private)], {"public_key_file": rsa_public}),
        ("ES256", ["--signing-key", str(ec_private), "--signing-alg", "ES256"], {"public_key_file": ec_public}),
        ("HS256", ["--signing-key", SECRET, "--signing-alg", "HS256"], {"secret": SECRET}),
    ]
    for alg, signing, key in cases:
        data = opa_build(source, tmp_path / f"{alg}.tar.gz", f"rev-{alg}", *signing)
        bundle = read_bundle(data, _verifier(algorithm=alg, **key), 10**7)
        assert bundle.signed and bundle.revision == f"rev-{alg}"
        assert bundle.source.revision == f"rev-{alg}"
        assert "iam/authz.rego" in bundle.source.modules
        assert not any(name.endswith("_test.rego") for name in bundle.source.modules)
        assert bundle.source.data["rbac"]["permissions"]["finance"][0]["path"] == "/api/invoices/**"
        assert bundle.source.data["tricky"]["s"] == "<a&b> \u00e9 \u2028 \t \u0001"


def test_canonical_json_digest_matches_opa(source, tmp_path, rsa_keys):
    data = opa_build(source, tmp_path / "b.tar.gz", "r", "--signing-key", str(rsa_keys[0]))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        contents = {m.name.lstrip("/"): archive.extractfile(m).read() for m in archive if m.isfile()}
    signed = _verifier(public_key_file=rsa_keys[1]).signed_files(contents[".signatures.json"])
    assert set(signed) == set(contents) - {".signatures.json"}
    for name, entry in signed.items():
        assert file_digest(name, contents[name], entry["algorithm"]) == entry["hash"], name


def test_unsigned_tampered_or_wrongly_signed_bundles_are_refused(source, tmp_path, rsa_keys):
    private, public = rsa_keys
    good = opa_build(source, tmp_path / "good.tar.gz", "r1", "--signing-key", str(private))
    unsigned = opa_build(source, tmp_path / "unsigned.tar.gz", "r1")
    (tmp_path / "other").mkdir()
    other_private, _ = _keypair(tmp_path / "other", "rsa")
    foreign = opa_build(source, tmp_path / "foreign.tar.gz", "r1", "--signing-key", str(other_private))
    (tmp_path / "claims.json").write_text('{"scope": "write"}')
    scoped = opa_build(source, tmp_path / "scoped.tar.gz", "r1", "--signing-key", str(private),
                       "--claims-file", str(tmp_path / "claims.json"))
    evil_rego = b"package iam.authz\n\nimport rego.v1\n\ndecision := {\"allowed\": true}\n"
    verifier = _verifier(public_key_file=public)
    cases = {
        "unsigned": (unsigned, "not signed"),
        "changed module": (retar(good, {"iam/authz.rego": evil_rego}), "digest mismatch"),
        "changed data": (retar(good, {"data.json": b'{"rbac": {"permissions": {"sales": []}}}'}), "digest mismatch"),
        "added module": (retar(good, {"evil/evil.rego": evil_rego}), "not included in the bundle signature"),
        "removed module": (retar(good, {"iam/authz.rego": None}), "missing from the bundle"),
        "other key": (foreign, "does not verify"),
        "scope": (scoped, "scope mismatch"),
        "unsafe path": (retar(good, {"../../etc/evil.rego": evil_rego}), "unsafe path"),
    }
    for label, (data, message) in cases.items():
        with pytest.raises(BundleRefused) as refused:
            read_bundle(data, verifier, 10**7)
        assert message in str(refused.value), label
    scoped_bundle = read_bundle(scoped, _verifier(public_key_file=public, scope="write"), 10**7)
    assert scoped_bundle.revision == "r1"
    # reformatting signed JSON does not matter (it is hashed canonically), as in OPA
    manifest = json.dumps(json.loads(retar_member(good, ".manifest")), indent=4).encode()
    assert read_bundle(retar(good, {".manifest": manifest}), verifier, 10**7).revision == "r1"


def retar_member(bundle: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        for member in archive:
            if member.name.lstrip("/") == name:
                return archive.extractfile(member).read()
    raise KeyError(name)


# ---------------------------------------------------------------- in the running proxy


def _wait_metric(proxy: ProxyProcess, labels: str, at_least: float) -> float:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proxy.metric("iam_proxy_bundle_loads_total", labels) < at_least:
        time.sleep(0.05)
    return proxy.metric("iam_proxy_bundle_loads_total", labels)


def _bundle_config(proxy_config: dict, bundle: dict, public: Path) -> dict:
    proxy_config["policy"].pop("dir")
    proxy_config["policy"]["bundle"] = {**bundle, "verification": {"public_key_file": str(public)}}
    return proxy_config


def test_signed_bundle_file_in_the_proxy_keeps_last_good_on_tampering(proxy_factory, proxy_config, source,
                                                                       tmp_path, rsa_keys, issuer):
    private, public = rsa_keys
    bundle_file = tmp_path / "active.tar.gz"
    good = opa_build(source, tmp_path / "r1.tar.gz", "rev-1", "--signing-key", str(private))
    bundle_file.write_bytes(good)
    proxy = proxy_factory(_bundle_config(proxy_config, {"file": str(bundle_file)}, public))
    sales = {"Authorization": f"Bearer {issuer.token('bob', ['sales'])}"}
    with proxy.client() as c:
        assert c.get("/api/invoices/1", headers=sales).status_code == 403

        # An attacker who can write the file but not sign: refused, rev-1 stays.
        (tmp_path / "evil.tar.gz").write_bytes(retar(good, {"data.json": json.dumps(
            {"rbac": {"permissions": {"sales": [{"methods": ["GET"], "path": "/api/**"}]}}}).encode()}))
        (tmp_path / "evil.tar.gz").replace(bundle_file)
        assert _wait_metric(proxy, 'result="refused"', 1) == 1
        assert c.get("/api/invoices/1", headers=sales).status_code == 403
        assert "digest mismatch" in proxy.process.logs()

        # A properly signed rev-2 that lets sales read invoices is activated.
        data = json.loads((source / "rbac" / "data.json").read_text())
        data["permissions"]["sales"] = [{"methods": ["GET"], "path": "/api/invoices/**"}]
        (source / "rbac" / "data.json").write_text(json.dumps(data))
        opa_build(source, tmp_path / "r2.tar.gz", "rev-2", "--signing-key", str(private))
        (tmp_path / "r2.tar.gz").replace(bundle_file)
        assert _wait_metric(proxy, 'result="ok"', 1) == 1
        assert c.get("/api/invoices/1", headers=sales).status_code == 200
    revisions = [e["bundles"]["policies"]["revision"] for e in proxy.wait_audit(3, timeout=5)]
    assert revisions == ["rev-1", "rev-1", "rev-2"]
    assert httpx.get(f"{proxy.admin_url}/readyz").json()["policy_revision"] == "rev-2"


def test_tampered_bundle_at_startup_refuses_to_start(proxy_config, source, tmp_path, rsa_keys):
    private, public = rsa_keys
    good = opa_build(source, tmp_path / "r1.tar.gz", "rev-1", "--signing-key", str(private))
    (tmp_path / "bad.tar.gz").write_bytes(retar(good, {"iam/authz.rego": b"package iam.authz\n"}))
    settings = parse_settings(_bundle_config(proxy_config, {"file": str(tmp_path / "bad.tar.gz")}, public))
    with pytest.raises(PolicyLoadError, match="bundle refused: iam/authz.rego: digest mismatch"):
        PolicyRuntime(settings, Metrics())


class _BundleServer(ThreadingHTTPServer):
    bundle = b""
    requests: list[tuple[str | None, int]]


class _BundleHandler(BaseHTTPRequestHandler):
    server: _BundleServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        etag = '"' + hashlib.sha256(self.server.bundle).hexdigest()[:16] + '"'
        if self.headers.get("if-none-match") == etag:
            self.server.requests.append((self.headers.get("if-none-match"), 304))
            self.send_response(304)
            self.send_header("etag", etag)
            self.end_headers()
            return
        self.server.requests.append((self.headers.get("if-none-match"), 200))
        self.send_response(200)
        self.send_header("content-type", "application/gzip")
        self.send_header("etag", etag)
        self.send_header("content-length", str(len(self.server.bundle)))
        self.end_headers()
        self.wfile.write(self.server.bundle)

    def log_message(self, *args) -> None:
        return None


def test_bundle_from_url_is_polled_with_etag(proxy_factory, proxy_config, source, tmp_path, rsa_keys, issuer):
    private, public = rsa_keys
    server = _BundleServer(("127.0.0.1", 0), _BundleHandler)
    server.requests = []
    server.bundle = opa_build(source, tmp_path / "r1.tar.gz", "rev-1", "--signing-key", str(private))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/bundles/iam.tar.gz"
        proxy = proxy_factory(_bundle_config(proxy_config, {"url": url, "poll_interval_seconds": 0.2}, public))
        assert _wait_metric(proxy, 'result="not_modified"', 2) >= 2
        assert server.requests[0] == (None, 200)
        assert all(req == (server.requests[1][0], 304) for req in server.requests[1:])

        server.bundle = opa_build(source, tmp_path / "r2.tar.gz", "rev-2", "--signing-key", str(private))
        assert _wait_metric(proxy, 'result="ok"', 1) == 1
        with proxy.client() as c:
            assert c.get("/public/x").status_code == 200
        assert proxy.wait_audit(1, timeout=5)[-1]["bundles"]["policies"]["revision"] == "rev-2"

        server.bundle = retar(server.bundle, {"iam/authz.rego": b"package iam.authz\n"})
        assert _wait_metric(proxy, 'result="refused"', 1) >= 1
        with proxy.client() as c:
            assert c.get("/public/x").status_code == 200
        assert proxy.wait_audit(2, timeout=5)[-1]["bundles"]["policies"]["revision"] == "rev-2"
    finally:
        server.shutdown()
