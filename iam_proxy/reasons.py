"""Every reason code the proxy answers or audits: its HTTP status, what it means, what to check.

This table is the registry: `docs/reason-codes.md` is generated from it (`iam-proxy docs`), and a
test fails when a code raised anywhere in `iam_proxy/` is missing here or the page is stale.
A status of 0 marks a code that only appears in the audit trail (the request went on, or was not
answered by the proxy).
"""

from __future__ import annotations

from typing import NamedTuple


class Reason(NamedTuple):
    code: str
    status: int
    meaning: str
    check: str


_ID = "the IdP's configuration (issuer, client, keys) and the proxy's log line with the error id"
_TOKEN = "how the client obtains its token; decode its payload and compare with the provider's settings"
_SAML = "the IdP's SAML settings for this SP (signing, audience, ACS URL) and the log line with the error id"

REASONS: tuple[Reason, ...] = (
    # -- the request itself
    Reason("allowed", 200, "The request was authenticated, allowed by policy and forwarded.", "-"),
    Reason("dry_run_denied", 200, "The policy denied, but the route is in dry-run mode: forwarded anyway.",
           "the route's `policy.dry_run`; the decision's reasons in the audit event"),
    Reason("bad_request", 400, "The request is malformed.", "the client's request line and headers"),
    Reason("path_not_normalized", 400, "The path has `..`, `//`, encoded slashes or similar.",
           "the client's URL; the proxy refuses paths a backend could read differently"),
    Reason("body_too_large", 400, "The body is larger than the route accepts for policy input.",
           "the route's body limits"),
    Reason("method_override_invalid", 400, "`X-HTTP-Method-Override` does not name an HTTP method.",
           "the client's override header"),
    Reason("no_route", 404, "No route matches the host, method and path.", "`routes[].match`; `iam-proxy explain`"),
    Reason("not_found", 404, "An unknown path on the admin listener.", "`/healthz`, `/readyz`, `/metrics`"),
    Reason("proxying_disabled", 404, "`forward_auth.only` is set: the proxy listener forwards nothing.",
           "send the request to the front proxy, or unset `forward_auth.only`"),
    Reason("route_ambiguous", 500, "More than one route matches: refused rather than guessed.",
           "`routes[].match` of the routes named in the log"),
    Reason("internal_error", 500, "An unexpected failure; the request was refused (fail closed).",
           "the proxy's log line with the error id"),
    Reason("client_disconnected", 499, "The client went away before the response was complete (audit only).", "-"),
    # -- authentication: no credential, or one that no longer counts
    Reason("credential_missing", 401, "No credential any of the route's authenticators accepts.",
           "the route's `authenticators`; the client sends a token, cookie or certificate of that kind"),
    Reason("session_revoked", 401, "The session cookie belongs to a session that ended (logout, back-channel "
           "logout): refused on every replica and after restarts.", "sign in again; the cookie is cleared"),
    Reason("subject_revoked", 401, "A Shared Signals event (session revoked, account disabled, credential "
           "compromised) revoked this subject after the credential was issued.",
           "the audit event of kind `signal` for the subject; a credential issued after the event is accepted"),
    Reason("session_expired", 401, "The session cookie's session is past `sessions.lifetime_seconds`.",
           "sign in again"),
    Reason("invalid_credential", 401, "The credential is of a known kind but not valid.", "the log line"),
    # -- bearer tokens (JWT and introspection)
    Reason("token_malformed", 401, "The bearer token is not a well-formed JWT (or has no exp).", _TOKEN),
    Reason("token_too_large", 401, "The bearer token is larger than the proxy reads.", _TOKEN),
    Reason("token_header_refused", 401, "The JWT header carries fields the proxy refuses (jku, x5u, crit, ...).",
           _TOKEN),
    Reason("token_claim_invalid", 401, "A time claim (exp, nbf, iat) is not a sane number.", _TOKEN),
    Reason("algorithm_not_allowed", 401, "The token's `alg` is not in the provider's `algorithms`.",
           "`identity_providers[].algorithms`; the IdP's signing algorithm"),
    Reason("issuer_unknown", 401, "The token's `iss` is not any configured provider's issuer.",
           "`identity_providers[].issuer` (exact string, trailing slash included)"),
    Reason("issuer_mismatch", 401, "The issuer in the document does not match the provider's issuer.", _ID),
    Reason("key_unknown", 401, "The token's `kid` is not in the provider's JWKS (after a refetch).",
           "the provider's `jwks_uri`/`jwks_file`; key rotation at the IdP"),
    Reason("bad_signature", 401, "The signature does not verify with the provider's key.", _TOKEN),
    Reason("token_expired", 401, "The token's `exp` has passed (beyond `leeway_seconds`).",
           "the client's token refresh; clocks (NTP)"),
    Reason("token_not_yet_valid", 401, "The token's `nbf` is in the future.", "clocks (NTP); `leeway_seconds`"),
    Reason("token_issued_in_future", 401, "The token's `iat` is in the future.", "clocks (NTP); `leeway_seconds`"),
    Reason("token_lifetime_too_long", 401, "exp - iat is longer than `max_token_lifetime_seconds`.",
           "the IdP's token lifetime; `identity_providers[].max_token_lifetime_seconds`"),
    Reason("audience_mismatch", 401, "The token's `aud` names none of the accepted audiences. The response, "
           "log, audit event and `explain` show `token_audiences` and `accepted_audiences`.",
           "`identity_providers[].audiences`; at the IdP an audience mapper (Keycloak) or the API's "
           "identifier (Entra, Okta, Auth0)"),
    Reason("subject_missing", 401, "The token has no `sub` (or the mapped subject is empty).",
           "`identity_providers[].claims.sub`"),
    Reason("claims_incomplete", 401, "A claim the provider requires is missing.", "`identity_providers[].claims`"),
    Reason("identity_unsafe", 401, "A mapped identity value cannot be sent in a header (control characters).",
           "the IdP's user attributes"),
    Reason("token_inactive", 401, "Introspection says the token is not active.", "the token's expiry or revocation"),
    Reason("token_type_not_allowed", 401, "Introspection's `token_type` is not accepted (e.g. a refresh token).",
           "the authenticator's `token_types`"),
    Reason("client_not_allowed", 401, "The token was issued to a client not in `client_ids`.",
           "the introspection authenticator's `client_ids`"),
    Reason("subject_changed", 401, "A session refresh returned another subject; the session ended.", _ID),
    # -- API keys, LDAP, certificates, Kerberos
    Reason("apikey_malformed", 401, "The API key is not in the proxy's key format.", "the key the client sends"),
    Reason("apikey_invalid", 401, "The API key is unknown, revoked or expired.", "`iam-proxy apikey list`"),
    Reason("basic_malformed", 401, "The Basic credentials cannot be decoded.", "the client's Authorization header"),
    Reason("invalid_username_or_password", 401, "The directory refused the username or password (one public "
           "reason for unknown user, wrong password, ambiguous entry).", "the proxy's log (the precise cause)"),
    Reason("user_not_in_directory", 401, "An enricher that requires an entry found none for this identity.",
           "the enricher's `key` and `filter`"),
    Reason("user_unknown", 401, "The identity is not known to the enricher's source.", "the enricher's settings"),
    Reason("certificate_malformed", 401, "The client certificate cannot be parsed.", "the client's certificate"),
    Reason("certificate_header_malformed", 401, "The front proxy's certificate header cannot be parsed.",
           "the front proxy's `ssl_client_cert`/XFCC configuration"),
    Reason("certificate_untrusted", 401, "The certificate does not chain to a configured CA.",
           "the authenticator's `ca_file`"),
    Reason("certificate_revoked", 401, "The certificate is on the CA's revocation list.", "the CRL"),
    Reason("certificate_revocation_unknown", 401, "Revocation could not be checked and the authenticator "
           "requires it.", "the CRL's reachability and freshness"),
    Reason("certificate_expired", 401, "The client certificate has expired.", "the certificate's not_after"),
    Reason("certificate_not_yet_valid", 401, "The client certificate is not valid yet.", "clocks; not_before"),
    Reason("certificate_wrong_usage", 401, "The certificate is not for client authentication (EKU).",
           "the certificate's extended key usage"),
    Reason("certificate_unmapped", 401, "No identity mapping matches the certificate.",
           "the authenticator's `identity` mapping (subject_dn, SAN, SPIFFE)"),
    Reason("negotiate_failed", 401, "The Kerberos (SPNEGO) token was refused.", "keytab, SPN, clocks"),
    Reason("negotiate_incomplete", 401, "SPNEGO needs another round trip the proxy does not do.", "the client"),
    Reason("negotiate_mechanism_not_supported", 401, "SPNEGO offered no Kerberos mechanism.", "the client"),
    Reason("negotiate_token_malformed", 401, "The Negotiate token cannot be decoded.", "the client"),
    Reason("negotiate_token_too_large", 401, "The Negotiate token is larger than the proxy reads.",
           "the user's group count (PAC size)"),
    Reason("ntlm_not_supported", 401, "The client sent NTLM instead of Kerberos.", "the browser's Kerberos setup"),
    Reason("principal_malformed", 401, "The Kerberos principal cannot be parsed.", "the client principal"),
    Reason("realm_not_allowed", 401, "The principal's realm is not in `realms`.", "the authenticator's `realms`"),
    # -- dependencies of authentication
    Reason("authn_unavailable", 503, "A dependency of authentication failed.", "the log line"),
    Reason("jwks_unavailable", 503, "The provider's JWKS could not be fetched.", "the IdP's reachability"),
    Reason("idp_unavailable", 503, "The IdP (discovery, token endpoint) could not be reached.", _ID),
    Reason("idp_misconfigured", 503, "The IdP's discovery document is unusable.", _ID),
    Reason("introspection_unavailable", 503, "The introspection endpoint failed or timed out.", _ID),
    Reason("ldap_unavailable", 503, "The directory could not be reached.", "`directories[]`; the LDAP server"),
    Reason("enricher_unavailable", 503, "An enricher's source failed: no half-enriched pass.", "the enricher"),
    Reason("keytab_unavailable", 503, "The Kerberos keytab cannot be read.", "the authenticator's `keytab`"),
    Reason("apikey_store_unavailable", 503, "The API key store cannot be read.", "the key store file"),
    Reason("session_store_unavailable", 503, "Redis (sessions, revocations) or the revocation file failed.",
           "`sessions.redis`; `sessions.revocation_file` (writable, on local disk)"),
    Reason("session_too_large", 500, "The session does not fit in a cookie.", "use `sessions.store: redis`"),
    # -- browser sign-in (OIDC)
    Reason("login_failed", 400, "The sign-in could not be completed.", _ID),
    Reason("login_state_missing", 400, "The callback came without the login cookie set at /.iam/login.",
           "`sessions.secure` on a plain-HTTP listener (the browser drops Secure cookies); the callback "
           "host must be the host the login started on"),
    Reason("login_expired", 400, "The sign-in took longer than `login_timeout_seconds`.", "sign in again"),
    Reason("state_mismatch", 400, "The callback's `state` is not this browser's.", "a stale tab; sign in again"),
    Reason("state_replayed", 400, "The callback was already used.", "the back button; sign in again"),
    Reason("nonce_mismatch", 401, "The ID token's nonce is not this sign-in's.", _ID),
    Reason("nonce_replayed", 400, "The ID token's nonce was already used.", "sign in again"),
    Reason("code_exchange_failed", 400, "The token endpoint refused the code.", "the client secret; redirect URI"),
    Reason("id_token_missing", 400, "The token response has no ID token.", "the client's `openid` scope"),
    Reason("idp_error", 400, "The IdP answered the callback with an error.", "the IdP's log for this client"),
    Reason("provider_unknown", 400, "The login names a provider this route does not offer.", "the login link"),
    Reason("logout_token_missing", 400, "A back-channel logout without `logout_token`.", "the IdP's logout call"),
    Reason("logout_token_invalid", 401, "The logout token is not a valid logout token.", _ID),
    Reason("logout_token_replayed", 400, "The logout token was already used.", "-"),
    Reason("forward_auth_not_served", 404, "The forward-auth endpoint is not enabled for this peer.",
           "`forward_auth.trusted_peers`"),
    Reason("forward_auth_uri_missing", 400, "The front proxy did not say which URL it asks about.",
           "the front proxy's X-Forwarded-Uri / X-Original-URL"),
    Reason("forward_auth_description_conflict", 400, "The front proxy's headers describe two requests.",
           "the front proxy's forward-auth configuration"),
    # -- the proxy's own endpoints (audit only: the page was served)
    Reason("portal_", 0, "`/.iam/`: the signed-in page was served.", "-"),
    Reason("portal_me", 0, "`/.iam/me`: the signed-in page was served.", "-"),
    Reason("portal_login", 0, "`/.iam/login`: the browser was sent to the IdP.", "-"),
    Reason("portal_callback", 0, "`/.iam/callback`: a sign-in completed; a session was created.", "-"),
    Reason("portal_logout", 0, "`/.iam/logout`: the confirmation page, or (POST) the session ended.", "-"),
    Reason("portal_signed_out", 0, "`/.iam/signed-out`: the page after the IdP's logout.", "-"),
    Reason("portal_backchannel_logout", 0, "`/.iam/backchannel-logout`: the IdP ended sessions; the log says "
           "how many.", "-"),
    Reason("portal_userinfo", 0, "`/.iam/userinfo`: the identity was returned as JSON.", "-"),
    Reason("saml_metadata", 0, "`/.iam/saml/metadata` was served.", "-"),
    Reason("jwks", 0, "`/.well-known/jwks.json` (the assertion's public keys) was served.", "-"),
    Reason("saml_login", 0, "`/.iam/saml/login`: the browser was sent to the IdP.", "-"),
    Reason("saml_acs", 0, "`/.iam/saml/acs`: a SAML response was accepted; a session was created.", "-"),
    Reason("saml_logout", 0, "`/.iam/saml/logout`: the session ended (SP-initiated).", "-"),
    Reason("saml_slo", 0, "`/.iam/saml/slo`: the IdP's logout request or response was handled.", "-"),
    # -- SAML refusals
    *(Reason(code, 401, meaning, _SAML) for code, meaning in (
        ("saml_assertion_encrypted", "The assertion is encrypted and the SP has no decryption key."),
        ("saml_assertion_unsigned", "The assertion is not signed and the SP requires it."),
        ("saml_audience_mismatch", "The assertion's audience is not this SP's entity id."),
        ("saml_destination_mismatch", "The response's Destination is not this ACS URL."),
        ("saml_expired", "The assertion's NotOnOrAfter has passed."),
        ("saml_not_yet_valid", "The assertion's NotBefore is in the future."),
        ("saml_in_response_to_mismatch", "The response answers a request this browser did not make."),
        ("saml_issuer_mismatch", "The response's Issuer is not the configured IdP."),
        ("saml_logout_invalid", "The logout request or response is not valid."),
        ("saml_logout_unsigned", "The logout message is not signed."),
        ("saml_message_malformed", "The SAML message cannot be decoded."),
        ("saml_recipient_mismatch", "The subject confirmation's Recipient is not this ACS URL."),
        ("saml_replayed", "The assertion was already used."),
        ("saml_response_invalid", "The response failed validation."),
        ("saml_response_unsigned", "The response is not signed and the SP requires it."),
        ("saml_signature_algorithm_refused", "The signature uses a refused algorithm (SHA-1)."),
        ("saml_signature_invalid", "The signature does not verify with the IdP's certificate."),
        ("saml_status_not_success", "The IdP answered with a non-success status."),
        ("saml_structure_invalid", "The XML does not have the structure the SP accepts (wrapping attacks)."),
        ("saml_subject_confirmation_missing", "No bearer subject confirmation."),
        ("saml_subject_missing", "The assertion has no subject."),
        ("saml_unsolicited", "An IdP-initiated response, and the SP does not accept them."),
        ("saml_xml_comment", "The XML contains comments inside signed values."),
        ("saml_xml_doctype", "The XML has a DOCTYPE (entity attacks)."),
    )),
    Reason("saml_message_missing", 400, "No SAMLResponse or SAMLRequest in the request.", _SAML),
    Reason("saml_message_too_large", 400, "The SAML message is larger than the SP reads.", _SAML),
    Reason("saml_metadata_unavailable", 503, "The IdP's metadata could not be fetched.", "`idp.url`"),
    Reason("saml_replay_cache_full", 503, "The in-memory replay cache is full.", "`replay_cache.store: redis`"),
    Reason("saml_replay_cache_unavailable", 503, "The Redis replay cache failed.", "`sessions.redis`"),
    # -- policy
    Reason("policy_denied", 403, "The policy denied the request; the audit event has its reasons.",
           "`iam-proxy explain` with the same request; the policy's `reasons`"),
    Reason("policy_error", 403, "The policy could not be evaluated: denied (fail closed).", "the log line"),
    Reason("policy_undefined", 403, "The decision path is undefined for this input: denied.",
           "the route's `policy.path`; a default in the policy"),
    Reason("policy_malformed", 403, "The decision is neither a boolean nor an object with `allowed`.",
           "the policy's rule value"),
    Reason("policy_unavailable", 503, "The OPA server could not be reached.", "`policy.opa.url`"),
    Reason("policy_timeout", 503, "The OPA server did not answer in time.", "`policy.opa.timeout_seconds`"),
    # -- Envoy external authorization (docs/envoy.md)
    Reason("ext_authz_not_served", 404, "An ext_authz check came from a peer outside `ext_authz.trusted_peers`.",
           "`ext_authz.trusted_peers`; the Envoy's address"),
    Reason("content_length_invalid", 400, "An ext_authz check's Content-Length is not a number.",
           "what the Envoy sends in the check"),
    Reason("body_not_json", 400, "An ext_authz check's body is not the JSON its content type says.",
           "the request body Envoy forwards (`with_request_body`)"),
    # -- rate limits (docs/rate-limiting.md)
    Reason("rate_limited", 429, "A rate limit is used up; `Retry-After` and `RateLimit` say when to retry.",
           "`rate_limits.limits` (or the policy's tier); the client's request rate"),
    Reason("rate_limit_unavailable", 503, "The rate limit store (Redis) is down and the limit fails closed.",
           "`rate_limits.redis`; `on_store_error`"),
    Reason("load_shed", 503, "The route's upstream is slow or failing: adaptive concurrency shed the request.",
           "the upstream's latency and errors; `rate_limits.adaptive`"),
    # -- upstream and audit
    Reason("upstream_unavailable", 502, "The upstream could not be reached.", "the route's `upstream`"),
    Reason("upstream_timeout", 504, "The upstream did not answer in time.", "the route's `timeout_seconds`"),
    Reason("upstream_response_failed", 0, "The upstream broke off mid-response (audit only).", "the upstream"),
    Reason("audit_unavailable", 503, "The request could not be audited (spool full with overflow: block, "
           "audit file unwritable): refused.", "`audit.spool`; disk space; the SIEM"),
    Reason("config_error", 2, "The configuration is invalid: `check` and `run` exit 2 naming the key.",
           "the key named in the message"),
)

BY_CODE: dict[str, Reason] = {reason.code: reason for reason in REASONS}


def render_markdown() -> str:
    """docs/reason-codes.md, generated: one table, grouped as REASONS is."""
    lines = ["# Reason codes", "",
             "Generated from `iam_proxy/reasons.py` by `iam-proxy docs` (or `make docs`); do not edit by hand.",
             "Every refusal carries one of these as `reason` in the problem body (`application/problem+json`),",
             "in the `x-iam-reason` header of a forward-auth answer, in the audit event and in the metrics.",
             "Status `audit` marks codes that only appear in the audit trail; `exit 2` is the CLI's.", "",
             "| code | HTTP | what it means | what to check |", "|---|---|---|---|"]
    for reason in REASONS:
        status = {0: "audit", 2: "exit 2"}.get(reason.status, str(reason.status))
        cells = [f"`{reason.code}`", status, reason.meaning, reason.check]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
