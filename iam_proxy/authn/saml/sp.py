"""The SAML service provider: pysaml2 configured with safe defaults, and the checks it lacks.

pysaml2's unsafe or missing defaults, and what this module does about them:
  - signatures default to rsa-sha1: the algorithm is pinned inside `service.sp`, where pysaml2 reads it;
  - `allow_unknown_attributes` off silently drops attributes without an OID mapping: on, and the
    identity is read from the verified assertion's raw attribute names, not pysaml2's renamed view;
  - no replay cache: every consumed assertion ID goes through a ReplayCache until it expires;
  - no XML guard: xmlguard.py refuses DTDs, comments and wrapped shapes before pysaml2 parses;
  - logout messages over HTTP-Redirect are not signature-checked for an SP: redirect_binding.py
    verifies the query signature over the raw query string;
  - one metadata file may describe many IdPs: the issuer must be the one configured IdP.
pysaml2 is blocking (and runs xmlsec1): every call runs in a small bounded thread pool.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.saml import NameID
from saml2.samlp import STATUS_SUCCESS

from ...core.errors import AuthUnavailable, InvalidCredential
from ...settings.saml import SAMLAttributeMapping, SAMLAuthenticatorSettings
from .attributes import LoginResult, LogoutRequestResult, map_identity
from .config import ACS_PATH, SIGNATURE_ALGORITHMS, SLO_PATH, sp_config_dict
from .metadata import MetadataError, check_metadata_document, fetch_idp_metadata
from .presets import mapping_for
from .redirect_binding import verify_redirect_query
from .replay import ReplayCache
from .xmlguard import (
    decode_post_message,
    inspect_logout_message,
    inspect_response,
    post_message_signed,
    pysaml2_refusal,
    refuse,
)

log = logging.getLogger("iam_proxy.saml")
# pysaml2 logs every NameID and attribute set at INFO: personal data that has no place in our logs.
logging.getLogger("saml2").setLevel(logging.WARNING)

# pysaml2 calls xmlsec1 as a subprocess; a few at a time is plenty and bounds the load a flood can cause.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="saml")


@dataclass
class _Loaded:
    client: Saml2Client
    # The same, but requiring the Response's own signature: used whenever a response carries one, so
    # that a present signature must verify even where only the assertion's is required.
    client_response_signed: Saml2Client
    idp_entity_id: str
    sso_url: str
    slo_url: str | None
    idp_certs: list[str] = field(default_factory=list)


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise refuse("saml_message_malformed", detail=f"bad timestamp {value!r}") from None


class ServiceProvider:
    """One configured SAML SP in front of one IdP."""

    def __init__(self, name: str, settings: SAMLAuthenticatorSettings, replay: ReplayCache,
                 session_factory: Callable[[], Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.settings = settings
        self.replay = replay
        self.mapping: SAMLAttributeMapping = mapping_for(settings.preset, settings.mapping)
        self.acs_url = settings.base_url + ACS_PATH
        self.slo_url = settings.base_url + SLO_PATH
        self._session_factory = session_factory
        self._clock = clock
        self._loaded: _Loaded | None = None
        signing, _ = SIGNATURE_ALGORITHMS[settings.signature_algorithm]
        self._sigalg = signing

    # ------------------------------------------------------------------ metadata

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    @property
    def idp_entity_id(self) -> str | None:
        return self._loaded.idp_entity_id if self._loaded else None

    async def refresh_metadata(self) -> bool:
        """Load the IdP metadata; on failure keep the last good copy. True when a new copy is in use."""
        try:
            raw = await fetch_idp_metadata(self.settings.idp, self._session_factory)
            loaded = await asyncio.get_running_loop().run_in_executor(_POOL, self._build, raw)
        except (MetadataError, OSError) as exc:
            log.warning("saml %s: IdP metadata not loaded: %s", self.name, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - pysaml2 raises many types for bad metadata
            log.warning("saml %s: IdP metadata not usable: %s: %s", self.name, type(exc).__name__, exc)
            return False
        self._loaded = loaded
        log.info("saml %s: IdP metadata loaded for %s", self.name, loaded.idp_entity_id)
        return True

    async def run_refresh(self) -> None:
        while True:
            # Until a first good copy arrives, retry often: logins answer 503 meanwhile.
            interval = self.settings.idp.refresh_seconds
            await asyncio.sleep(interval if self.ready else min(5.0, interval))
            await self.refresh_metadata()

    def _build(self, raw: bytes) -> _Loaded:
        idp = self.settings.idp
        node_name = check_metadata_document(raw, signed=idp.signing_cert_file is not None)
        text = raw.decode("utf-8")
        config = SPConfig()
        config.load(sp_config_dict(self.settings, idp_metadata=text))
        client = Saml2Client(config=config)
        strict = SPConfig()
        strict.load(sp_config_dict(self.settings.model_copy(update={"want_response_signed": True}), idp_metadata=text))
        if idp.signing_cert_file is not None:
            if not client.sec.verify_signature(text, cert_file=str(idp.signing_cert_file), node_name=node_name):
                raise MetadataError("metadata signature does not verify with signing_cert_file")
        idps = list(client.metadata.identity_providers())
        if idp.entity_id is not None:
            if idp.entity_id not in idps:
                raise MetadataError(f"IdP {idp.entity_id!r} is not in the metadata")
            entity_id = idp.entity_id
        elif len(idps) == 1:
            entity_id = idps[0]
        else:
            raise MetadataError(f"metadata describes {len(idps)} IdPs; set idp.entity_id")
        sso = client.metadata.single_sign_on_service(entity_id, BINDING_HTTP_REDIRECT)
        if not sso:
            raise MetadataError("the IdP has no HTTP-Redirect SingleSignOnService")
        slo = client.metadata.single_logout_service(entity_id, BINDING_HTTP_REDIRECT, "idpsso")
        certs = [cert for _, cert in client.metadata.certs(entity_id, "idpsso", use="signing")]
        if not certs:
            raise MetadataError("the IdP metadata has no signing certificate")
        return _Loaded(client=client, client_response_signed=Saml2Client(config=strict), idp_entity_id=entity_id,
                       sso_url=sso[0]["location"], slo_url=slo[0]["location"] if slo else None, idp_certs=certs)

    def _require_loaded(self) -> _Loaded:
        if self._loaded is None:
            raise AuthUnavailable("saml_metadata_unavailable", detail=f"saml {self.name}: no IdP metadata")
        return self._loaded

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)

    # ------------------------------------------------------------------ login

    async def authn_request(self, relay_state: str) -> tuple[str, str]:
        """(redirect URL to the IdP, request id) for a new SP-initiated login."""
        loaded = self._require_loaded()

        def build() -> tuple[str, str]:
            kwargs: dict[str, Any] = {}
            if self.settings.name_id_format:
                kwargs["nameid_format"] = self.settings.name_id_format
            request_id, info = loaded.client.prepare_for_authenticate(
                entityid=loaded.idp_entity_id, relay_state=relay_state, binding=BINDING_HTTP_REDIRECT,
                sign=self.settings.sign_requests, sigalg=self._sigalg if self.settings.sign_requests else None,
                **kwargs)
            return dict(info["headers"])["Location"], request_id

        return await self._run(build)

    async def consume(self, saml_response: str, expected_request_id: str | None) -> LoginResult:
        """Verify an HTTP-POST Response at the ACS and turn its one assertion into an Identity."""
        loaded = self._require_loaded()
        settings = self.settings
        xml = decode_post_message(saml_response)
        shape = inspect_response(xml, want_assertions_signed=settings.want_assertions_signed,
                                 want_response_signed=settings.want_response_signed)
        self._check_shape(shape, loaded, expected_request_id)
        outstanding = {expected_request_id: "/"} if expected_request_id else {}

        client = loaded.client_response_signed if shape.response_signed else loaded.client

        def parse():
            return client.parse_authn_request_response(saml_response, BINDING_HTTP_POST, outstanding=outstanding)

        try:
            response = await self._run(parse)
        except InvalidCredential:
            raise
        except Exception as exc:  # noqa: BLE001 - pysaml2 raises a zoo of types; all refuse
            raise pysaml2_refusal(exc) from None
        if response is None or response.assertion is None:
            raise refuse("saml_response_invalid", detail="pysaml2 returned no assertion")
        assertion = response.assertion
        name_id = getattr(getattr(assertion, "subject", None), "name_id", None)
        # The element pysaml2 verified is the one the guard inspected.
        verified_name_id = name_id.text.strip() if name_id is not None and name_id.text else None
        if assertion.id != shape.assertion_id or verified_name_id != shape.name_id:
            raise refuse("saml_structure_invalid", detail="verified assertion differs from the inspected one")
        if name_id is None or not shape.name_id:
            raise refuse("saml_subject_missing", message="The SAML assertion has no subject.")
        expires = self._replay_expiry(shape)
        if not await self.replay.first_use(f"{loaded.idp_entity_id}|{assertion.id}", expires):
            raise refuse("saml_replayed", message="This SAML response was already used.")
        return self._login_result(assertion, shape.name_id, name_id.format, loaded.idp_entity_id)

    def _check_shape(self, shape, loaded: _Loaded, expected_request_id: str | None) -> None:
        now = self._clock()
        skew = self.settings.clock_skew_seconds
        if shape.status != STATUS_SUCCESS:
            raise refuse("saml_status_not_success", message="The identity provider did not sign you in.",
                         detail=f"status {shape.status}")
        if any(issuer != loaded.idp_entity_id for issuer in shape.issuers) or not shape.issuers:
            raise refuse("saml_issuer_mismatch", detail=f"issuers {shape.issuers}")
        if shape.destination != self.acs_url:
            raise refuse("saml_destination_mismatch", detail=f"destination {shape.destination!r}")
        if self.settings.sp_entity_id not in shape.audiences:
            raise refuse("saml_audience_mismatch", message="The SAML assertion is not meant for this service.",
                         detail=f"audiences {shape.audiences}")
        if not shape.confirmations:
            raise refuse("saml_subject_confirmation_missing", detail="no bearer SubjectConfirmation")
        in_response_to = shape.in_response_to
        if in_response_to is None:
            if not self.settings.allow_idp_initiated:
                raise refuse("saml_unsolicited", message="Unsolicited SAML responses are not accepted.")
        elif expected_request_id is None or in_response_to != expected_request_id:
            raise refuse("saml_in_response_to_mismatch", message="This SAML response answers another login.",
                         detail="InResponseTo does not match the pending request")
        for recipient, not_on_or_after, confirmation_irt in shape.confirmations:
            if recipient != self.acs_url:
                raise refuse("saml_recipient_mismatch", detail=f"recipient {recipient!r}")
            expiry = _timestamp(not_on_or_after)
            if expiry is None or now - skew >= expiry:
                raise refuse("saml_expired", message="The SAML response has expired.")
            if confirmation_irt is not None and confirmation_irt != in_response_to:
                raise refuse("saml_in_response_to_mismatch", detail="SubjectConfirmationData InResponseTo differs")
        not_before = _timestamp(shape.not_before)
        if not_before is not None and now + skew < not_before:
            raise refuse("saml_not_yet_valid", message="The SAML response is not valid yet.")
        not_on_or_after = _timestamp(shape.not_on_or_after)
        if not_on_or_after is not None and now - skew >= not_on_or_after:
            raise refuse("saml_expired", message="The SAML response has expired.")

    def _replay_expiry(self, shape) -> float:
        times = [_timestamp(t) for _, t, _ in shape.confirmations] + [_timestamp(shape.not_on_or_after)]
        known = [t for t in times if t is not None]
        return max(known) + self.settings.clock_skew_seconds if known else self._clock() + 3600

    def _login_result(self, assertion, name_id: str, name_id_format: str | None, idp: str) -> LoginResult:
        attributes: dict[str, list[str]] = {}
        for statement in assertion.attribute_statement or []:
            for attribute in statement.attribute or []:
                values = [v.text.strip() for v in attribute.attribute_value or [] if v.text is not None]
                for key in (attribute.name, attribute.friendly_name):
                    if key:
                        attributes.setdefault(key, []).extend(values)
        session_index = auth_time = acr = session_expires = None
        for statement in assertion.authn_statement or []:
            session_index = statement.session_index or session_index
            auth_time = _timestamp(statement.authn_instant) or auth_time
            session_expires = _timestamp(statement.session_not_on_or_after) or session_expires
            context = statement.authn_context
            if context is not None and context.authn_context_class_ref is not None:
                acr = (context.authn_context_class_ref.text or "").strip() or acr
        identity = map_identity(attributes, self.mapping, name_id=name_id, issuer=idp, provider=self.name,
                                auth_time=int(auth_time) if auth_time else None, acr=acr,
                                expires_at=int(session_expires) if session_expires else None)
        return LoginResult(identity=identity, name_id=name_id, name_id_format=name_id_format,
                           session_index=session_index, session_expires_at=session_expires)

    # ------------------------------------------------------------------ single logout

    async def logout_request(self, name_id: str, name_id_format: str | None, session_index: str | None,
                             relay_state: str) -> tuple[str, str] | None:
        """(redirect URL, request id) of an SP-initiated LogoutRequest; None if the IdP has no SLO."""
        loaded = self._require_loaded()
        if loaded.slo_url is None:
            return None

        def build() -> tuple[str, str]:
            request_id, request = loaded.client.create_logout_request(
                loaded.slo_url, loaded.idp_entity_id, name_id=NameID(text=name_id, format=name_id_format),
                session_indexes=[session_index] if session_index else None, sign=False,
                expire=None)
            info = loaded.client.apply_binding(
                BINDING_HTTP_REDIRECT, str(request), loaded.slo_url, relay_state,
                sign=self.settings.sign_requests, sigalg=self._sigalg)
            return dict(info["headers"])["Location"], request_id

        return await self._run(build)

    async def verify_logout_response(self, raw_query: str | None, form: dict[str, str] | None,
                                     expected_request_id: str | None) -> None:
        """A LogoutResponse to our LogoutRequest: signed by the IdP, answering our request, successful."""
        loaded = self._require_loaded()
        if raw_query is not None:
            message = verify_redirect_query(raw_query, "SAMLResponse", loaded.idp_certs)
            root = inspect_logout_message(message)
            # pysaml2 wants the message as the binding carried it: deflated for HTTP-Redirect
            binding, encoded = BINDING_HTTP_REDIRECT, base64.b64encode(_deflate(message)).decode()
        else:
            assert form is not None
            message = decode_post_message(form.get("SAMLResponse", ""))
            root = inspect_logout_message(message)
            if not post_message_signed(root):
                raise refuse("saml_logout_unsigned", message="The logout message is not signed.")
            binding, encoded = BINDING_HTTP_POST, form["SAMLResponse"]
        if root.get("InResponseTo") is None or root.get("InResponseTo") != expected_request_id:
            raise refuse("saml_in_response_to_mismatch", detail="LogoutResponse answers another request")

        def parse():
            return loaded.client.parse_logout_request_response(encoded, binding)

        try:
            response = await self._run(parse)
        except Exception as exc:  # noqa: BLE001
            raise pysaml2_refusal(exc) from None
        issuer = response.response.issuer if response is not None else None
        if issuer is None or issuer.text != loaded.idp_entity_id:
            raise refuse("saml_issuer_mismatch", detail="LogoutResponse issuer")
        if not response.status_ok():
            raise refuse("saml_status_not_success", detail="LogoutResponse status")

    async def handle_logout_request(self, raw_query: str | None, form: dict[str, str] | None) -> LogoutRequestResult:
        """An IdP-initiated LogoutRequest: verify it and prepare the signed LogoutResponse redirect."""
        loaded = self._require_loaded()
        if raw_query is not None:
            message = verify_redirect_query(raw_query, "SAMLRequest", loaded.idp_certs)
            relay_state = _query_value(raw_query, "RelayState")
        else:
            assert form is not None
            message = decode_post_message(form.get("SAMLRequest", ""))
            if not post_message_signed(inspect_logout_message(message)):
                raise refuse("saml_logout_unsigned", message="The logout message is not signed.")
            relay_state = form.get("RelayState")
        root = inspect_logout_message(message)
        if root.tag.rsplit("}", 1)[-1] != "LogoutRequest":
            raise refuse("saml_structure_invalid", detail="expected a LogoutRequest")
        encoded = base64.b64encode(message).decode()

        def handle() -> LogoutRequestResult:
            request = loaded.client.parse_logout_request(encoded, BINDING_HTTP_POST)
            if request is None:
                raise refuse("saml_logout_invalid")
            msg = request.message
            if msg.issuer is None or msg.issuer.text != loaded.idp_entity_id:
                raise refuse("saml_issuer_mismatch", detail="LogoutRequest issuer")
            if msg.destination is not None and msg.destination != self.slo_url:
                raise refuse("saml_destination_mismatch", detail=f"LogoutRequest destination {msg.destination!r}")
            if msg.name_id is None or not msg.name_id.text:
                raise refuse("saml_subject_missing", detail="LogoutRequest without NameID")
            if loaded.slo_url is None:
                raise refuse("saml_logout_invalid", detail="the IdP metadata has no HTTP-Redirect SLO endpoint")
            response = loaded.client.create_logout_response(msg, [BINDING_HTTP_REDIRECT], sign=False)
            info = loaded.client.apply_binding(BINDING_HTTP_REDIRECT, str(response), loaded.slo_url,
                                               relay_state or "", response=True,
                                               sign=self.settings.sign_requests, sigalg=self._sigalg)
            indexes = tuple((si.text or "").strip() for si in msg.session_index or [])
            return LogoutRequestResult(name_id=msg.name_id.text.strip(), session_indexes=indexes,
                                       response_url=dict(info["headers"])["Location"])

        try:
            return await self._run(handle)
        except InvalidCredential:
            raise
        except Exception as exc:  # noqa: BLE001
            raise pysaml2_refusal(exc) from None


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _query_value(raw_query: str, name: str) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(raw_query, keep_blank_values=True).get(name)
    return values[0] if values else None
