"""Authenticators: one module per credential kind, each turning a credential into an `Identity`.

Contract (authn/base.py `Authenticator`): `authenticate(ctx)` returns None when the request carries no credential of its
kind ("not mine"), and raises `InvalidCredential` when it does but the credential is bad.
"""

from ..core.identity import Identity

__all__ = ["Identity"]
