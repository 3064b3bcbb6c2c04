"""Per-sink privacy rules applied to a copy of the native event before it is rendered.

    drop          the field is removed
    mask          "***"
    pseudonymize  "ps:" + HMAC-SHA256(pseudonym_key, value), hex, 32 digits: stable for one key,
                  so a SIEM can still correlate one user's events without learning who it is
    encrypt       "enc:" + base64url(nonce | AES-GCM(value)), the field path as associated data;
                  whoever holds the key recovers the value with `decrypt_value`
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import os
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import PrivacySettings
from ..redaction import MASK, pointer

# Every place the native event carries one identity value.
FIELD_ALIASES: dict[str, list[str]] = {
    "email": ["identity.email", "input.identity.email"],
    "username": ["identity.username", "input.identity.username"],
    "subject": ["identity.sub", "input.identity.sub"],
    "name": ["identity.name", "input.identity.name"],
    "groups": ["identity.groups", "input.identity.groups"],
    "client_ip": ["client.address", "client.peer", "input.attributes.source.address.socketAddress.address"],
}


class PrivacyFilter:
    def __init__(self, settings: PrivacySettings) -> None:
        self.keep_input = settings.keeps_input
        self.rules = [(path, rule.action) for rule in settings.rules
                      for path in FIELD_ALIASES.get(rule.field, [rule.field])]
        self._pseudonym_key = (settings.pseudonym_key.get_secret_value().encode()
                               if settings.pseudonym_key else None)
        self._aead = (AESGCM(base64.b64decode(settings.encryption_key.get_secret_value()))
                      if settings.encryption_key else None)

    @property
    def active(self) -> bool:
        return bool(self.rules) or not self.keep_input

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        if not self.active:
            return event
        out = {k: v for k, v in event.items() if k != "input" or self.keep_input}
        touched = {path.split(".", 1)[0] for path, _ in self.rules}
        for top in touched:  # copy only the branches a rule changes
            if top in out:
                out[top] = copy.deepcopy(out[top])
        redacted = [pointer(path.split(".")) for path, action in self.rules if self._apply_one(out, path, action)]
        inputs = [p for p in redacted if p.startswith("/input/")]
        if inputs and "input" in out:  # a replay must know these input values are not the real ones
            out["input_redacted"] = sorted({*out.get("input_redacted", []), *inputs})
        return out

    def _apply_one(self, node: Any, path: str, action: str) -> bool:
        """True when the field was there and was changed."""
        *parents, leaf = path.split(".")
        for part in parents:
            if not isinstance(node, dict) or not isinstance(node.get(part), dict):
                return False
            node = node[part]
        if not isinstance(node, dict) or node.get(leaf) is None:
            return False
        if action == "drop":
            del node[leaf]
            return True
        value = node[leaf]
        if isinstance(value, list):
            node[leaf] = [self._transform(v, action, path) for v in value]
        else:
            node[leaf] = self._transform(value, action, path)
        return True

    def _transform(self, value: Any, action: str, path: str) -> str:
        if action == "mask":
            return MASK
        if action == "pseudonymize":
            if self._pseudonym_key is None:
                raise RuntimeError("pseudonymize rule without pseudonym_key")
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            return "ps:" + hmac.new(self._pseudonym_key, text.encode(), hashlib.sha256).hexdigest()[:32]
        if self._aead is None:
            raise RuntimeError("encrypt rule without encryption_key")
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, orjson.dumps(value), _aad(path))
        return "enc:" + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def _aad(path: str) -> bytes:
    return b"iam-proxy-audit:" + path.encode()


def decrypt_value(token: str, key_b64: str, path: str) -> Any:
    """The original value of an `enc:` field (path as written in the event, e.g. identity.email)."""
    if not token.startswith("enc:"):
        raise ValueError("not an encrypted field")
    raw = base64.urlsafe_b64decode(token[4:] + "=" * (-len(token[4:]) % 4))
    return orjson.loads(AESGCM(base64.b64decode(key_b64)).decrypt(raw[:12], raw[12:], _aad(path)))
