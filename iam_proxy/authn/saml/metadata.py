"""IdP metadata in (file or URL, signature-checked, refreshed) and SP metadata out.

A refresh that fails (unreachable, too large, bad signature, expired `validUntil`, IdP missing) keeps
the last good metadata and is logged; until a first good copy exists the SP is not ready and logins
answer 503.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import aiohttp

from ...settings.saml import SAMLAuthenticatorSettings, SAMLIdPMetadataSettings
from .xmlguard import DS, parse_strict

log = logging.getLogger("iam_proxy.saml")

MD = "urn:oasis:names:tc:SAML:2.0:metadata"


class MetadataError(Exception):
    """The IdP metadata could not be used (the message is safe to log)."""


async def fetch_idp_metadata(settings: SAMLIdPMetadataSettings, session_factory) -> bytes:
    if settings.file is not None:
        data = await asyncio.to_thread(Path(settings.file).read_bytes)
    else:
        assert settings.url is not None  # settings validation: exactly one of file, url
        timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        own = session_factory is None  # standalone use (CLI, tests): a session for this one call
        session: aiohttp.ClientSession = aiohttp.ClientSession() if own else session_factory()
        try:
            async with session.get(settings.url, timeout=timeout, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise MetadataError(f"GET {settings.url} answered {resp.status}")
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > settings.max_bytes:
                        break
                data = b"".join(chunks)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise MetadataError(f"GET {settings.url}: {type(exc).__name__}") from None
        finally:
            if own:
                await session.close()
    if len(data) > settings.max_bytes:
        raise MetadataError(f"metadata larger than {settings.max_bytes} bytes")
    return data


def check_metadata_document(xml: bytes, *, signed: bool) -> str:
    """No DTD, a metadata root, and (when `signed`) one enveloped signature covering that root.

    Returns the root's qualified name, which xmlsec1 then verifies the signature on.
    """
    try:
        root = parse_strict(xml)
    except Exception as exc:  # noqa: BLE001 - InvalidCredential from the guard: reword for the log
        raise MetadataError(f"metadata refused: {getattr(exc, 'reason', exc)} ({getattr(exc, 'detail', '')})") from None
    names = {f"{{{MD}}}EntityDescriptor": "EntityDescriptor", f"{{{MD}}}EntitiesDescriptor": "EntitiesDescriptor"}
    if root.tag not in names:
        raise MetadataError(f"metadata root is {root.tag}, not an EntityDescriptor or EntitiesDescriptor")
    if signed:
        references = [ref.get("URI", "") for sig in root.findall(f"{{{DS}}}Signature")
                      for ref in sig.iter(f"{{{DS}}}Reference")]
        root_id = root.get("ID")
        if len(references) != 1 or references[0] not in ("", f"#{root_id}" if root_id else ""):
            raise MetadataError("metadata is not signed over its root element")
    return f"{MD}:{names[root.tag]}"


def sp_metadata(settings: SAMLAuthenticatorSettings) -> bytes:
    """The SP's metadata (entity id, ACS, SLO, signing certificate), valid for a week."""
    from saml2.config import SPConfig
    from saml2.metadata import create_metadata_string

    from .config import sp_config_dict  # pysaml2 is loaded only when a SAML SP is configured

    config = SPConfig()
    config.load(sp_config_dict(settings, idp_metadata=None))
    xml = create_metadata_string(None, config=config, valid=24 * 7).decode()
    # pysaml2 advertises every algorithm xmlsec1 knows (md5, sha1, ...); an IdP may pick from that
    # list, so publish only the ones this SP accepts.
    def strong_only(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1) in _ADVERTISED_ALGORITHMS else ""

    return re.sub(r'<(?:\w+:)?(?:DigestMethod|SigningMethod)\b[^>]*?\bAlgorithm="([^"]+)"[^>]*/>',
                  strong_only, xml).encode()


_ADVERTISED_ALGORITHMS = frozenset({
    "http://www.w3.org/2001/04/xmlenc#sha256", "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
})
