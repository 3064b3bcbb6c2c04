"""Loading: one YAML file, `${ENV}` interpolation, errors that name the exact key path."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..core.errors import ConfigError
from .root import Settings


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys in a mapping without a word; in a config that silently
    drops a setting (two `assertion:` blocks, say), so here it is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: a key beside it overrides
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, str):
                continue
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}, first at line {first_line[key]}: YAML would keep only the last",
                    key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(node: Any, path: str = "", environ: dict[str, str] | None = None) -> Any:
    """Replace `${NAME}` and `${NAME:-default}` in every string; a missing variable is an error."""
    env = os.environ if environ is None else environ
    if isinstance(node, dict):
        return {k: interpolate_env(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_env(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _ENV_REF.sub(substitute, node)
    return node


def _error_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("jwt", "anonymous", "x509", "kerberos", "ldap", "apikey", "file", "stdout", "syslog", "http",
                      "oidc_session", "introspection", "saml", "keycloak") and out:
            continue  # discriminated-union tags add noise to the path
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_settings(raw: Any) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError("<root>: the config must be a mapping")
    raw = interpolate_env(raw)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _error_path(tuple(first["loc"])) or "<root>"
        message = first["msg"].removeprefix("Value error, ")
        cross_checked = ("routes", "authenticators", "identity_providers", "directories", "enrichers",
                         "sessions", "audit", "rate_limits", "signals", "ext_authz", "policy")
        if ": " in message and message.split(": ", 1)[0].startswith(cross_checked):
            where, message = message.split(": ", 1)
        raise ConfigError(f"{where}: {message}") from None


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_settings(raw)
