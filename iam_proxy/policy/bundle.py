"""OPA bundles as the embedded engine's policy source: a `.tar.gz` with `.manifest`, `data.json` and
`*.rego`, read from a file or an HTTP URL polled with ETag.

Signatures follow OPA's bundle-signing spec (https://www.openpolicyagent.org/docs/management-bundles#signing):
`.signatures.json` holds exactly one compact JWT whose payload lists every file as
`{name, hash, algorithm}`. Structured files (`data.json`, `data.yaml`, `.manifest`) are hashed in
OPA's canonical JSON form (keys sorted, no whitespace); everything else byte for byte. With a
verification key configured, a bundle is refused unless the JWT verifies with that key and
algorithm, the scope matches, and the signed file list and the bundle's files are exactly the same
with the same digests. A refused bundle never replaces the active one.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import io
import json
import logging
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, RSAKey

from ..settings import BundleSettings, BundleVerificationSettings
from .source import PolicyLoadError, PolicyProblem, PolicySource, _mount

log = logging.getLogger("iam_proxy.policy.bundle")

SIGNATURES = ".signatures.json"
MANIFEST = ".manifest"
_HASHES = {"MD5": hashlib.md5, "SHA-1": hashlib.sha1, "SHA-224": hashlib.sha224, "SHA-256": hashlib.sha256,
           "SHA-384": hashlib.sha384, "SHA-512": hashlib.sha512}


class BundleRefused(Exception):
    """The bundle is unreadable, unsigned, tampered or inconsistent; the active one stays."""


# ---------------------------------------------------------------- OPA's canonical hash


def _encode_scalar(value: Any) -> str:
    if isinstance(value, str):
        # Go's json.Encoder (SetEscapeHTML(false)) also escapes U+2028 and U+2029.
        return json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if isinstance(value, _Number):
        return value.text
    return json.dumps(value)  # true, false, null


class _Number:
    """A JSON number kept as written, as Go's json.Number keeps it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _canonical(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if i:
                out.append(",")
            out.append(_encode_scalar(key))
            out.append(":")
            _canonical(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _canonical(item, out)
        out.append("]")
    else:
        out.append(_encode_scalar(value))


def _structured(name: str) -> bool:
    base = PurePosixPath(name).name
    return base in ("data.json", "data.yaml", "data.yml", MANIFEST)


def _parse_structured(name: str, content: bytes, numbers_as_text: bool) -> Any:
    if name.endswith((".yaml", ".yml")):
        return yaml.safe_load(content) or {}
    if numbers_as_text:
        return json.loads(content, parse_float=_Number, parse_int=_Number)
    return json.loads(content)


def file_digest(name: str, content: bytes, algorithm: str) -> str:
    factory = _HASHES.get(algorithm)
    if factory is None:
        raise BundleRefused(f"{name}: unsupported hash algorithm {algorithm!r}")
    if _structured(name):
        parts: list[str] = []
        try:
            _canonical(_parse_structured(name, content, numbers_as_text=True), parts)
        except (ValueError, yaml.YAMLError) as exc:
            raise BundleRefused(f"{name}: not valid JSON/YAML ({exc})") from None
        content = "".join(parts).encode()
    return factory(content).hexdigest()


# ---------------------------------------------------------------- signatures


def _verification_key(settings: BundleVerificationSettings) -> Any:
    if settings.secret is not None:
        return OctKey.import_key(settings.secret.get_secret_value().encode())
    if settings.public_key_file is None:
        raise BundleRefused(f"{settings.algorithm} needs public_key_file")
    pem = settings.public_key_file.read_bytes()
    if b"BEGIN CERTIFICATE" in pem:
        pem = x509.load_pem_x509_certificate(pem).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_type = ECKey if settings.algorithm.startswith("ES") else RSAKey
    return key_type.import_key(pem)


class SignatureVerifier:
    def __init__(self, settings: BundleVerificationSettings) -> None:
        self.settings = settings
        self.key = _verification_key(settings)  # read once; the algorithm is fixed here too

    def signed_files(self, signatures_json: bytes) -> dict[str, dict[str, str]]:
        try:
            document = json.loads(signatures_json)
            tokens = document["signatures"]
        except (ValueError, KeyError, TypeError):
            raise BundleRefused(f"{SIGNATURES} is malformed") from None
        if not isinstance(tokens, list) or len(tokens) != 1 or not isinstance(tokens[0], str):
            raise BundleRefused(f"{SIGNATURES}: expected exactly one JWT")
        try:
            verified = jws.deserialize_compact(tokens[0], self.key, algorithms=[self.settings.algorithm])
            payload = json.loads(verified.payload)
        except (JoseError, ValueError) as exc:
            raise BundleRefused(f"{SIGNATURES}: signature does not verify ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("files"), list):
            raise BundleRefused(f"{SIGNATURES}: payload has no files list")
        scope = payload.get("scope", "") or ""
        if scope != (self.settings.scope or ""):
            raise BundleRefused(f"{SIGNATURES}: scope mismatch")
        files: dict[str, dict[str, str]] = {}
        for entry in payload["files"]:
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "hash")):
                raise BundleRefused(f"{SIGNATURES}: malformed files entry")
            files[entry["name"].lstrip("/")] = entry
        return files

    def verify(self, files: dict[str, bytes]) -> None:
        if SIGNATURES not in files:
            raise BundleRefused(f"bundle is not signed (no {SIGNATURES}) but a verification key is configured")
        signed = self.signed_files(files[SIGNATURES])
        for name, content in files.items():
            if name == SIGNATURES or any(fnmatch.fnmatchcase(name, p) for p in self.settings.exclude_files):
                continue
            entry = signed.pop(name, None)
            if entry is None:
                raise BundleRefused(f"{name}: not included in the bundle signature")
            algorithm = entry.get("algorithm") or ""
            if not algorithm:
                raise BundleRefused(f"{name}: no hash algorithm in the bundle signature")
            if file_digest(name, content, algorithm) != entry["hash"].lower():
                raise BundleRefused(f"{name}: digest mismatch (the file was changed after signing)")
        missing = [n for n in signed if not any(fnmatch.fnmatchcase(n, p) for p in self.settings.exclude_files)]
        if missing:
            raise BundleRefused(f"signed files missing from the bundle: {sorted(missing)}")


# ---------------------------------------------------------------- reading a bundle


def _safe_name(name: str) -> str:
    path = PurePosixPath(name.lstrip("/"))
    if not path.parts or any(part in ("..", "") for part in path.parts) or "\\" in name:
        raise BundleRefused(f"{name!r}: unsafe path in bundle")
    return str(path)


def untar(data: bytes, max_bytes: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleRefused(f"{member.name!r}: links and special files are not allowed in a bundle")
                total += member.size
                if total > max_bytes:
                    raise BundleRefused(f"bundle is larger than {max_bytes} bytes uncompressed")
                name = _safe_name(member.name)
                if name in files:
                    raise BundleRefused(f"{name}: appears twice in the bundle")
                extracted = archive.extractfile(member)
                files[name] = extracted.read() if extracted is not None else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"not a readable .tar.gz bundle ({exc})") from None
    return files


def _package(text: str) -> str | None:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("package "):
            return stripped.split()[1]
    return None


def _under_roots(path: str, roots: list[str]) -> bool:
    return any(root == "" or path == root or path.startswith(root + "/") for root in roots)


@dataclass(frozen=True)
class Bundle:
    source: PolicySource
    revision: str  # the manifest's revision ("" if none)
    signed: bool


def read_bundle(data: bytes, verifier: SignatureVerifier | None, max_bytes: int, origin: str = "bundle") -> Bundle:
    files = untar(data, max_bytes)
    if verifier is not None:
        verifier.verify(files)
    elif SIGNATURES in files:
        log.warning("%s is signed but no verification key is configured: signatures NOT checked", origin)
    manifest: dict[str, Any] = {}
    if MANIFEST in files:
        try:
            manifest = json.loads(files[MANIFEST])
        except ValueError:
            raise BundleRefused(f"{MANIFEST} is not JSON") from None
        if not isinstance(manifest, dict):
            raise BundleRefused(f"{MANIFEST} must be an object")
    roots = manifest.get("roots", [""])
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise BundleRefused(f"{MANIFEST}: roots must be a list of strings")
    roots = [r.strip("/") for r in roots]
    modules: dict[str, str] = {}
    data_doc: dict[str, Any] = {}
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        base = PurePosixPath(name).name
        if name.endswith(".rego"):
            if base.endswith("_test.rego"):
                continue
            try:
                text = content.decode()
            except UnicodeDecodeError:
                raise BundleRefused(f"{name}: not UTF-8") from None
            package = _package(text)
            if package is not None and not _under_roots(package.replace(".", "/"), roots):
                raise BundleRefused(f"{name}: package {package} is outside the manifest roots {roots}")
            modules[name] = text
        elif base in ("data.json", "data.yaml", "data.yml"):
            parent = list(PurePosixPath(name).parent.parts)
            try:
                value = _parse_structured(name, content, numbers_as_text=False)
            except (ValueError, yaml.YAMLError) as exc:
                raise PolicyLoadError([PolicyProblem(name, 1, f"invalid data document: {exc}")]) from None
            if parent and not _under_roots("/".join(parent), roots):
                raise BundleRefused(f"{name}: data outside the manifest roots {roots}")
            if not parent and isinstance(value, dict):
                for key in value:
                    if not _under_roots(key, roots) and not any(r.startswith(key + "/") for r in roots):
                        raise BundleRefused(f"{name}: data.{key} is outside the manifest roots {roots}")
            _mount(data_doc, parent, value or {}, name)
        else:
            continue
        digest.update(name.encode() + b"\0" + content + b"\0")
    if not modules:
        raise BundleRefused("bundle holds no .rego modules")
    revision = manifest.get("revision", "")
    if not isinstance(revision, str):
        raise BundleRefused(f"{MANIFEST}: revision must be a string")
    source = PolicySource(modules=modules, data=data_doc, revision=revision or digest.hexdigest()[:16], stamp=())
    return Bundle(source=source, revision=revision, signed=SIGNATURES in files)


# ---------------------------------------------------------------- sources: a file or a URL


class BundleSource:
    """Fetches the bundle (file: when its mtime or size changes; URL: with If-None-Match), checks it,
    and hands it to the engine. `fetch` blocks, so the watcher runs it in a thread."""

    def __init__(self, settings: BundleSettings) -> None:
        self.settings = settings
        self.verifier = SignatureVerifier(settings.verification) if settings.verification is not None else None
        self.etag: str | None = None
        self._file_stamp: tuple[int, int] | None = None
        self.origin = str(settings.file) if settings.file is not None else _redact_url(settings.url or "")

    def fetch(self) -> Bundle | None:
        """The new bundle, or None when unchanged; raises BundleRefused or PolicyLoadError."""
        if self.settings.file is not None:
            return self._fetch_file(self.settings.file)
        return self._fetch_url(self.settings.url or "")

    def _fetch_file(self, path: Path) -> Bundle | None:
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._file_stamp:
                return None
            data = path.read_bytes()
        except OSError as exc:
            raise BundleRefused(f"{path}: cannot read ({exc.strerror})") from None
        self._file_stamp = stamp  # a refused file is not read again until it changes
        return read_bundle(data, self.verifier, self.settings.max_bytes, self.origin)

    def _fetch_url(self, url: str) -> Bundle | None:
        request = urllib.request.Request(url, headers={"accept": "application/gzip, application/octet-stream"})
        if self.etag:
            request.add_header("if-none-match", self.etag)
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as response:  # noqa: S310
                data = response.read(self.settings.max_bytes + 1)
                etag = response.headers.get("etag")
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return None
            raise BundleRefused(f"{self.origin}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise BundleRefused(f"{self.origin}: unreachable ({type(exc).__name__})") from None
        if len(data) > self.settings.max_bytes:
            raise BundleRefused(f"{self.origin}: bundle larger than {self.settings.max_bytes} bytes")
        bundle = read_bundle(data, self.verifier, self.settings.max_bytes, self.origin)
        self.etag = etag  # only once the bundle was accepted, so a refused one is fetched again
        return bundle

    @property
    def poll_interval(self) -> float:
        return self.settings.poll_interval_seconds

    def load_initial(self) -> PolicySource:
        """At startup the bundle must be there and valid: without it there is no policy to enforce."""
        try:
            bundle = self.fetch()
        except BundleRefused as exc:
            raise PolicyLoadError([PolicyProblem(self.origin, 0, f"bundle refused: {exc}")]) from None
        if bundle is None:  # cannot happen on a first fetch (no stamp, no ETag yet)
            raise PolicyLoadError([PolicyProblem(self.origin, 0, "bundle not loaded")])
        log.info("bundle %s: revision %s%s", self.origin, bundle.source.revision, " (signed)" if bundle.signed else "")
        return bundle.source


def _redact_url(url: str) -> str:
    """Never log credentials a bundle URL may carry (user:password@ or a token in the query)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


async def watch_bundle(source: BundleSource, engine: Any, metrics: Any, interval: float) -> None:
    """Poll forever; a refused or uncompilable bundle is logged and counted, and the last good stays."""
    while True:
        await asyncio.sleep(interval)
        await poll_once(source, engine, metrics)


async def poll_once(source: BundleSource, engine: Any, metrics: Any) -> bool:
    try:
        bundle = await asyncio.to_thread(source.fetch)
        if bundle is None:
            metrics.bundle_loads.labels(result="not_modified").inc()
            return False
        await asyncio.to_thread(engine.activate, bundle.source)  # compiling is bounded, but not instant
    except BundleRefused as exc:
        log.error("bundle %s refused, keeping revision %s: %s", source.origin, engine.revision, exc)
        metrics.bundle_loads.labels(result="refused").inc()
        return False
    except PolicyLoadError as exc:
        log.error("bundle %s does not compile, keeping revision %s: %s", source.origin, engine.revision, exc)
        metrics.bundle_loads.labels(result="error").inc()
        return False
    metrics.bundle_loads.labels(result="ok").inc()
    return True
