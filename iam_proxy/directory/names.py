"""LDAP names: search filter escaping (RFC 4515) and distinguished names (RFC 4514), and the password
rules checked before any bind."""

from __future__ import annotations

import re

from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn


def escape_filter_value(value: str) -> str:
    """RFC 4515 section 3: escape `\\ * ( )` and NUL, so the value can only ever be a literal."""
    out = []
    for char in value:
        if char in "\\*()\x00":
            out.append(f"\\{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def password_is_usable(password: str) -> bool:
    """False for passwords whose simple bind would be an unauthenticated bind, or that no server accepts."""
    return bool(password.strip()) and "\x00" not in password


_HEX_ESCAPE = re.compile(r"\\([0-9a-fA-F]{2})|\\(.)")


def _unescape_dn_value(value: str) -> str:
    raw = bytearray()
    pos = 0
    for match in _HEX_ESCAPE.finditer(value):
        raw += value[pos:match.start()].encode()
        raw += bytes([int(match.group(1), 16)]) if match.group(1) else match.group(2).encode()
        pos = match.end()
    raw += value[pos:].encode()
    return raw.decode("utf-8", errors="replace")


def first_rdn_value(dn: str) -> str:
    """`cn=Finance\\, EMEA,ou=groups,...` -> `Finance, EMEA`; the DN itself if it does not parse."""
    try:
        parts = parse_dn(dn, strip=True)
    except LDAPException:
        return dn
    return _unescape_dn_value(parts[0][1]) if parts else dn


def normalize_dn(dn: str) -> str:
    """A comparable form of a DN (attribute names and values lower-cased, no spacing around separators)."""
    parts = parse_dn(dn, strip=True)
    return ",".join(f"{attr.strip().lower()}={val.strip().lower()}" for attr, val, _ in parts)


def dn_is_within(dn: str, base_dn: str) -> bool:
    try:
        child, base = normalize_dn(dn), normalize_dn(base_dn)
    except LDAPException:
        return False
    return child == base or child.endswith("," + base)
