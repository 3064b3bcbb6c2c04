"""Enrichers: the stage after authentication that adds groups, roles and attributes to an identity
from another source (an LDAP directory, Keycloak). A route lists its enrichers by name; they run in
that order, each one receiving the previous one's identity. Anonymous identities are never enriched.

Adding a kind: write `enrich/<kind>.py` with a class that has `name` and
`async enrich(identity, ctx) -> Identity`, add its settings model to `EnricherSettings` in
settings/enrich.py, and its builder to `BUILDERS` in `enrich/registry.py`.
"""

from .base import Enricher

__all__ = ["Enricher"]
