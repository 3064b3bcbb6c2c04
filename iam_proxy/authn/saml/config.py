"""pysaml2's configuration for our one service provider, with its unsafe defaults replaced."""

from __future__ import annotations

from typing import Any

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT

from ...core.extras import program_path
from ...settings.saml import SAMLAuthenticatorSettings

ACS_PATH = "/.iam/saml/acs"
SLO_PATH = "/.iam/saml/slo"
METADATA_PATH = "/.iam/saml/metadata"

SIGNATURE_ALGORITHMS = {
    "rsa-sha256": ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmlenc#sha256"),
    "rsa-sha384": ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
                   "http://www.w3.org/2001/04/xmldsig-more#sha384"),
    "rsa-sha512": ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha512", "http://www.w3.org/2001/04/xmlenc#sha512"),
}


def xmlsec_binary() -> str:
    return program_path("xmlsec1") or "/usr/bin/xmlsec1"  # settings refused a config without it


def sp_config_dict(settings: SAMLAuthenticatorSettings, idp_metadata: str | None) -> dict[str, Any]:
    base = settings.base_url
    signing, digest = SIGNATURE_ALGORITHMS[settings.signature_algorithm]
    sp: dict[str, Any] = {
        "endpoints": {
            "assertion_consumer_service": [(base + ACS_PATH, BINDING_HTTP_POST)],
            "single_logout_service": [(base + SLO_PATH, BINDING_HTTP_REDIRECT), (base + SLO_PATH, BINDING_HTTP_POST)],
        },
        "want_assertions_signed": settings.want_assertions_signed,
        "want_response_signed": settings.want_response_signed,
        "want_assertions_or_response_signed": True,
        "allow_unsolicited": settings.allow_idp_initiated,
        "authn_requests_signed": settings.sign_requests,
        "logout_requests_signed": settings.sign_requests,
        "logout_responses_signed": settings.sign_requests,
        # pysaml2 reads these from service.sp; at the top level they are silently ignored (rsa-sha1).
        "signing_algorithm": signing,
        "digest_algorithm": digest,
    }
    if settings.name_id_format:
        sp["name_id_format"] = [settings.name_id_format]
    config: dict[str, Any] = {
        "entityid": settings.sp_entity_id,
        "xmlsec_binary": xmlsec_binary(),
        "key_file": str(settings.key_file),
        "cert_file": str(settings.cert_file),
        "allow_unknown_attributes": True,
        "accepted_time_diff": settings.clock_skew_seconds,
        "service": {"sp": sp},
    }
    if idp_metadata is not None:
        config["metadata"] = {"inline": [idp_metadata]}
    return config
