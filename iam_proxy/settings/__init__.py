"""Typed, validated settings: one YAML file, `${ENV}` interpolation, secrets that never print.

`load_settings(path)` returns a frozen `Settings` or raises `ConfigError` naming the exact key path
(`routes[1].upstream: ...`), which the CLI turns into exit code 2. One module per section, in the
order a request meets them: listeners, identity (providers), authn (with x509, directory, saml),
enrich, routes, policy, forward, sessions, audit; `root` holds the checks that span sections.
"""

from .loading import interpolate_env, load_settings, parse_settings
from .root import Settings

__all__ = ["Settings", "interpolate_env", "load_settings", "parse_settings"]
