"""Sealed cookie values: AES-256-GCM with a key derived (HKDF-SHA256) from the session secret.

The cookie name is bound as associated data, so a value sealed for one cookie cannot be replayed as
another. Older secrets (`previous_secrets`) still open values; new values use the current secret.
"""

from __future__ import annotations

import base64
import os
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"


def _key(secret: str) -> AESGCM:
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"iam-proxy session v1",
                    info=b"cookie sealing").derive(secret.encode())
    return AESGCM(material)


class Sealer:
    def __init__(self, secret: str, previous: list[str] = ()) -> None:
        self._current = _key(secret)
        self._all = [self._current, *(_key(s) for s in previous)]

    def seal(self, plaintext: bytes, purpose: str) -> str:
        nonce = os.urandom(12)
        sealed = self._current.encrypt(nonce, zlib.compress(plaintext, 6), purpose.encode())
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode().rstrip("=")

    def open(self, value: str, purpose: str) -> bytes | None:
        """The plaintext, or None for anything that was not sealed by us for this purpose."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) < 1 + 12 + 16 or raw[:1] != _VERSION:
            return None
        nonce, sealed = raw[1:13], raw[13:]
        for key in self._all:
            try:
                return zlib.decompress(key.decrypt(nonce, sealed, purpose.encode()))
            except (InvalidTag, zlib.error):
                continue
        return None
