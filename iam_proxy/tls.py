"""TLS termination: the listener's SSLContext, its reload without a restart, and the verified client
certificate handed to the app in the ASGI scope (`scope["extensions"]["tls"]`, the ASGI TLS extension).

Reload: OpenSSL never forgets a trust anchor or CRL once loaded into a context, so re-loading files
into the live context could add a CA but never remove one, nor replace a CRL. Instead a fresh context
is built when any file changes, and the listening context's SNI callback (OpenSSL calls it for every
ClientHello, with or without a server name) moves each new handshake onto the newest context.
Connections already open keep the context they started with.

Resumption: with client certificates on, TLS 1.3 tickets and TLS 1.2 tickets are off, so a client
whose certificate was revoked cannot resume a session negotiated before the CRL changed.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from .errors import ConfigError
from .settings import TLSSettings

log = logging.getLogger("iam_proxy.tls")

_VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_TLS_VERSION_NUMBERS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def build_server_context(settings: TLSSettings) -> ssl.SSLContext:
    """One complete server context from the files as they are now; raises OSError or ssl.SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[settings.min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    if settings.ciphers:
        ctx.set_ciphers(settings.ciphers)
    ctx.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.verify_mode = _VERIFY_MODES[settings.client_auth]
    if settings.client_auth != "none" and settings.client_ca_file is not None:  # TLSSettings pairs them
        ctx.load_verify_locations(cafile=str(settings.client_ca_file))
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
        if settings.crl_file is not None:
            ctx.load_verify_locations(cafile=str(settings.crl_file))
            ctx.verify_flags |= (ssl.VERIFY_CRL_CHECK_CHAIN if settings.crl_check == "chain"
                                 else ssl.VERIFY_CRL_CHECK_LEAF)
    return ctx


def file_stamp(paths: list[Path]) -> tuple[Any, ...]:
    """Identity, size and mtime of each file (None if missing): any change means a reload."""
    out: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class ReloadingServerContext:
    """The listening context plus the newest context built from the files; see the module docstring."""

    def __init__(self, settings: TLSSettings, clock=time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._paths = [p for p in (settings.cert_file, settings.key_file, settings.client_ca_file,
                                   settings.crl_file) if p is not None]
        self._lock = threading.Lock()
        self._stamp = file_stamp(self._paths)
        try:
            self.listening = build_server_context(settings)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(str(p) for p in self._paths)
            raise ConfigError(f"listeners.*.tls: cannot load the TLS files ({files}): {exc}") from None
        self.current = self.listening
        self.generation = 0
        self._checked = clock()
        if settings.reload_interval_seconds > 0:
            self.listening.sni_callback = self._on_client_hello

    def _on_client_hello(self, ssl_object, server_name, context) -> None:
        try:
            self.reload_if_changed()
        except Exception:  # noqa: BLE001 - a reload bug must not break handshakes
            log.exception("TLS reload check failed")
        if self.current is not self.listening:
            ssl_object.context = self.current
        return None

    def reload_if_changed(self) -> bool:
        now = self._clock()
        if now - self._checked < self.settings.reload_interval_seconds:
            return False
        with self._lock:
            self._checked = now
            stamp = file_stamp(self._paths)
            if stamp == self._stamp:
                return False
            try:
                fresh = build_server_context(self.settings)
            except (OSError, ssl.SSLError) as exc:
                # Often a half-written rotation (new cert, old key): keep serving, try again later.
                log.warning("TLS files changed but could not be loaded, keeping the previous ones: %s", exc)
                return False
            self._stamp, self.current = stamp, fresh
            self.generation += 1
        log.warning("TLS certificate, CA bundle or CRL reloaded (generation %d)", self.generation)
        return True


def _pem(der: bytes) -> str:
    return ssl.DER_cert_to_PEM_cert(der)


def tls_scope_extension(transport: Any) -> dict[str, Any] | None:
    """The ASGI TLS extension for a connection, or None on plain HTTP.

    `client_cert_chain` holds PEM strings, leaf first; a certificate is only here when the handshake
    verified it (an unverifiable one fails the handshake), so `client_cert_error` is always None.
    """
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    chain: list[str] = []
    leaf = ssl_object.getpeercert(binary_form=True)
    if leaf:
        chain = [_pem(leaf)]
        verified = _verified_chain(ssl_object)
        if verified and verified[0] == leaf:
            chain = [_pem(der) for der in verified]
    name = None
    if leaf:
        name = x509.load_der_x509_certificate(leaf).subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSION_NUMBERS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


def _verified_chain(ssl_object: Any) -> list[bytes]:
    """The chain OpenSSL verified, as DER (public from Python 3.13, private `_sslobj` before)."""
    getter = getattr(ssl_object, "get_verified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        return []
    try:
        certs = getter() or []
    except (ssl.SSLError, ValueError):
        return []
    out = []
    for cert in certs:
        out.append(cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return out
