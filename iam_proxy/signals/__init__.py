"""OpenID Shared Signals receiver: Security Event Tokens (RFC 8417) by push (RFC 8935) and poll
(RFC 8936), per the OpenID Shared Signals Framework, acting on CAEP and RISC events.

    settings/signals.py  the `signals:` section (transmitters, delivery, stream management), event types
    subjects.py    subject identifiers (RFC 9493) and the keys an identity is known by
    tokens.py      verify a SET: signature (transmitter JWKS), typ, iss, aud, jti, events
    revocations.py subjects whose credentials issued before an event are refused (guard)
    receiver.py    one SET in: verify, de-duplicate, act, audit
    push.py        POST /.iam/ssf/events (RFC 8935)
    poll.py        the background poller with acknowledgements (RFC 8936)
    stream.py      the transmitter's /.well-known/ssf-configuration and its stream management API
"""

from ..settings.signals import (  # noqa: F401 (the event types, named where the settings need them)
    SESSION_REVOKED,
    TOKEN_CLAIMS_CHANGE,
    ASSURANCE_LEVEL_CHANGE,
    CREDENTIAL_CHANGE,
    ACCOUNT_DISABLED,
    ACCOUNT_PURGED,
    CREDENTIAL_COMPROMISE,
    SESSIONS_REVOKED,
    REVOKING,
    REFRESHING,
)

PUSH_PATH = "/.iam/ssf/events"
