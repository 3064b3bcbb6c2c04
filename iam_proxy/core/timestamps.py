"""RFC 3339 UTC timestamps (`2026-12-06T07:08:10.809Z`) for the policy input and the audit event.

Every request formats two of them. The part up to the second is formatted once a second and the
fraction appended, which costs a third of `datetime.fromtimestamp(...).isoformat(...)`; the text is
the same (tests/unit/test_timestamps.py).
"""

from __future__ import annotations

import math
import time

_second: tuple[int, str] = (-1, "")


def rfc3339_utc(ts: float, digits: int = 3) -> str:
    """`ts` (seconds since the epoch, not before it) in UTC with `digits` (3 or 6) fractional digits, truncated as
    datetime's isoformat truncates after rounding to the microsecond."""
    global _second
    fraction_of_second, seconds = math.modf(ts)  # rounded to the microsecond as datetime rounds
    whole, micros = int(seconds), round(fraction_of_second * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    fraction = f"{micros // 1000:03d}" if digits == 3 else f"{micros:06d}"
    return f"{_second[1]}.{fraction}Z"
