"""OpenID Shared Signals receiver: Security Event Tokens (RFC 8417) by push (RFC 8935) and poll
(RFC 8936), per the OpenID Shared Signals Framework, acting on CAEP and RISC events.

    settings.py    the `signals:` section: transmitters, delivery, stream management
    subjects.py    subject identifiers (RFC 9493) and the keys an identity is known by
    tokens.py      verify a SET: signature (transmitter JWKS), typ, iss, aud, jti, events
    revocations.py subjects whose credentials issued before an event are refused (guard)
    receiver.py    one SET in: verify, de-duplicate, act, audit
    push.py        POST /.iam/ssf/events (RFC 8935)
    poll.py        the background poller with acknowledgements (RFC 8936)
    stream.py      the transmitter's /.well-known/ssf-configuration and its stream management API
"""

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
TOKEN_CLAIMS_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change"
ASSURANCE_LEVEL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change"
CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
ACCOUNT_PURGED = "https://schemas.openid.net/secevent/risc/event-type/account-purged"
CREDENTIAL_COMPROMISE = "https://schemas.openid.net/secevent/risc/event-type/credential-compromise"
SESSIONS_REVOKED = "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked"

# End the subject's sessions and refuse its credentials issued before the event.
REVOKING = frozenset({SESSION_REVOKED, ACCOUNT_DISABLED, ACCOUNT_PURGED, CREDENTIAL_COMPROMISE, SESSIONS_REVOKED})
# Forget what was looked up about the subject (enrichment, introspection, decisions).
REFRESHING = frozenset({TOKEN_CLAIMS_CHANGE, ASSURANCE_LEVEL_CHANGE, CREDENTIAL_CHANGE})

PUSH_PATH = "/.iam/ssf/events"
