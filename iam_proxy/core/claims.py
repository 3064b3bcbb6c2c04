"""Reading claims, attributes and query parameters that may hold several values, and JSON objects."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, TypeVar

import orjson

T = TypeVar("T")


def first(values: Iterable[T] | None) -> T | None:
    """The first value, or None when there is none (or no list at all)."""
    return next(iter(values), None) if values is not None else None


def first_of(attributes: Mapping[str, Iterable[str]], names: Iterable[str]) -> str | None:
    """The first non-empty value of the first of `names` that has one (SAML and LDAP attributes)."""
    return first(value for name in names for value in attributes.get(name, ()) if value)


def all_of(attributes: Mapping[str, Iterable[str]], names: Iterable[str]) -> tuple[str, ...]:
    """Every non-empty value of `names`, in order, each once (groups and roles from attributes)."""
    return tuple(dict.fromkeys(value for name in names for value in attributes.get(name, ()) if value))


def json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from a peer's answer; {} for anything else (not JSON, or not an object)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
