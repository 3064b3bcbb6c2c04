"""Bench tokens: RS256 JWTs signed with the dev identity provider's key (`make certs`).

Every target verifies the same tokens against the same JWKS. Minting 100,000 distinct tokens takes
a while (one RSA signature each), so the token file is cached beside the other tools and reused
while its tokens stay valid for the length of a run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from iam_proxy.devcerts import DEV_AUDIENCE, DEV_ISSUER, DEV_KID

TOKEN_TTL_SECONDS = 7 * 24 * 3600
MIN_REMAINING_SECONDS = 6 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(sub: str, now: int, groups: list[str]) -> dict:
    return {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": sub, "iat": now, "nbf": now,
            "exp": now + TOKEN_TTL_SECONDS, "jti": hashlib.sha256(f"{sub}:{now}".encode()).hexdigest()[:24],
            "groups": groups, "preferred_username": sub, "email": f"{sub}@example.org",
            "email_verified": True}


class TokenMinter:
    def __init__(self, key_pem: bytes) -> None:
        self._key = serialization.load_pem_private_key(key_pem, password=None)
        header = {"alg": "RS256", "kid": DEV_KID, "typ": "JWT"}
        self._header = _b64(json.dumps(header, separators=(",", ":")).encode())

    def mint(self, sub: str, now: int, groups: list[str] | None = None) -> str:
        payload = _b64(json.dumps(_claims(sub, now, groups or ["finance"]), separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}".encode()
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
        return f"{self._header}.{payload}.{_b64(signature)}"


_worker_minter: TokenMinter | None = None


def _init_worker(key_pem: bytes) -> None:
    global _worker_minter
    _worker_minter = TokenMinter(key_pem)


def _mint_range(args: tuple[int, int, int]) -> list[str]:
    start, stop, now = args
    if _worker_minter is None:
        raise RuntimeError("minting worker was not initialised")
    return [_worker_minter.mint(f"bench-user-{i}", now) for i in range(start, stop)]


def _still_valid(meta: Path) -> bool:
    if not meta.exists():
        return False
    return json.loads(meta.read_text())["expires"] - time.time() > MIN_REMAINING_SECONDS


def distinct_tokens(key_path: Path, count: int, cache_dir: Path) -> Path:
    """A file of `count` distinct valid tokens (one per line), minted once and cached."""
    key_pem = key_path.read_bytes()
    key_id = hashlib.sha256(key_pem).hexdigest()[:12]
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"tokens-{key_id}-{count}.txt"
    meta = path.with_suffix(".json")
    if _still_valid(meta):
        return path
    for bigger in sorted(cache_dir.glob(f"tokens-{key_id}-*.txt")):
        if int(bigger.stem.rsplit("-", 1)[1]) > count and _still_valid(bigger.with_suffix(".json")):
            with bigger.open() as source:
                path.write_text("".join(next(source) for _ in range(count)))
            meta.write_text(bigger.with_suffix(".json").read_text())
            return path
    now = int(time.time())
    step = 2000
    chunks = [(i, min(i + step, count), now) for i in range(0, count, step)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2, initializer=_init_worker,
                             initargs=(key_pem,)) as pool:
        tokens = [t for chunk in pool.map(_mint_range, chunks) for t in chunk]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(tokens) + "\n")
    tmp.replace(path)
    meta.write_text(json.dumps({"expires": now + TOKEN_TTL_SECONDS, "count": count}))
    return path
