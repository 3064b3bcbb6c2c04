"""The `aud` check shared by bearer JWTs and introspected tokens, and the refusal that says which
audience the token had beside the accepted ones (client ids and API names, never a credential), so
that a 401 `audience_mismatch` can be acted on without reading the proxy's code."""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import InvalidCredential

_MAX_SHOWN = 10  # a token may name many audiences; the refusal shows the first few, each bounded
_MAX_LENGTH = 200


def token_audiences(aud: Any) -> list[str]:
    """The `aud` claim as a list of strings (a single string, a list, or absent)."""
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return [value for value in values if isinstance(value, str)]


def _shown(values: Iterable[str]) -> list[str]:
    return [value[:_MAX_LENGTH] for value in list(values)[:_MAX_SHOWN]]


def audience_mismatch(token: list[str], accepted: Iterable[str],
                      message: str = "The token is not meant for this service.") -> InvalidCredential:
    accepted = list(accepted)
    error = InvalidCredential("audience_mismatch", message=message,
                              detail=f"token aud {_shown(token)}, accepted {_shown(accepted)}")
    error.facts = {"token_audiences": _shown(token), "accepted_audiences": _shown(accepted)}
    return error


def check_audience(aud: Any, accepted: Iterable[str]) -> None:
    """Raise `audience_mismatch` unless the token names at least one accepted audience."""
    accepted = list(accepted)
    audiences = token_audiences(aud)
    if not set(audiences) & set(accepted):
        raise audience_mismatch(audiences, accepted)
