"""TLS on a listener, with every failed handshake counted and logged.

uvloop runs TLS in its own SSL protocol and, when a handshake fails, closes the connection and logs
only in asyncio debug mode: a client whose certificate is expired, revoked or untrusted vanished
without a trace. So the listener builds that same protocol itself (uvicorn is given no SSL context,
see guard.py) with a waiter of its own: the waiter learns how the handshake ended, the subclass
knows the peer's address, and the guard counts and logs the failure by reason. The subclass also
holds the connection's slot in the per-client ledger from the TCP accept on, so connections still
in their handshake count too; the handshake is bounded by `header_timeout_seconds`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.utils import get_remote_addr
from uvloop.loop import SSLProtocol

if TYPE_CHECKING:
    from .guard import Guard

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) of a client certificate that did not verify
_VERIFY_CODES = {
    9: "certificate_invalid",       # not yet valid
    10: "certificate_expired",
    18: "certificate_untrusted",    # self-signed leaf
    19: "certificate_untrusted",    # self-signed certificate in the chain
    20: "certificate_untrusted",    # issuer not in client_ca_file
    21: "certificate_untrusted",
    23: "certificate_revoked",
    26: "certificate_wrong_usage",  # no clientAuth in the extended key usage
}
# OpenSSL reason names of other handshake errors
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "certificate_missing",
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "WRONG_SSL_VERSION": "protocol_version",
    "UNKNOWN_PROTOCOL": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_CIPHERS_AVAILABLE": "no_shared_cipher",
    "HTTP_REQUEST": "not_tls",
    "HTTPS_PROXY_REQUEST": "not_tls",
    "WRONG_VERSION_NUMBER": "not_tls",
}


def classify(exc: BaseException | None) -> tuple[str, str]:
    """(reason label, detail for the log) of a handshake that ended with `exc` (None: the peer
    closed the connection before the handshake was done)."""
    if exc is None:
        return "closed", "connection closed during the handshake"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_CODES.get(exc.verify_code, "certificate_invalid"), exc.verify_message or str(exc)
    if isinstance(exc, ssl.SSLEOFError):
        return "closed", "connection closed during the handshake"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        detail = f"{exc.library or 'SSL'}: {reason or exc}"
        if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_")) and reason not in _REASONS:
            return "other", f"the client sent the alert {reason}"
        return _REASONS.get(reason, "other"), detail
    if isinstance(exc, ConnectionAbortedError):  # uvloop's handshake timeout
        return "timeout", "handshake not finished within listeners.limits.header_timeout_seconds"
    if isinstance(exc, OSError):
        return "closed", f"connection error during the handshake ({type(exc).__name__})"
    return "other", type(exc).__name__


class WatchedTLS(SSLProtocol):
    """uvloop's server-side SSL protocol around `app`, reporting to `guard` how the handshake ended."""

    def __init__(self, guard: "Guard", app: Any, context: ssl.SSLContext, loop: asyncio.AbstractEventLoop) -> None:
        self.guard = guard
        self.app = app
        self.peer: tuple[str, int] | None = None
        self.admitted = False
        waiter = loop.create_future()
        waiter.add_done_callback(self._handshake_done)
        super().__init__(loop, app, context, waiter, server_side=True,
                         ssl_handshake_timeout=guard.limits.header_timeout_seconds)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.peer = get_remote_addr(transport)
        self.admitted = self.guard.admit(self.peer)
        if not self.admitted:
            transport.abort()  # no TLS yet, so no HTTP answer can be sent
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self.admitted:
            self.guard.release(self.peer)

    def _handshake_done(self, waiter: asyncio.Future) -> None:
        if not self.admitted or waiter.cancelled():
            return
        exc = waiter.exception()
        if exc is None and self.app.transport is not None:  # the app protocol has its connection: success
            return
        self.guard.handshake_failed(self.peer, *classify(exc))
