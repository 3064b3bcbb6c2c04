"""core/timestamps.py writes what datetime's isoformat writes, for the policy input (milliseconds) and
the audit event (microseconds), across second boundaries and the cache of the formatted second."""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import pytest

from iam_proxy.core.timestamps import rfc3339_utc


def by_datetime(ts: float, timespec: str) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


EDGES = [0.0, 0.0005, 0.9994999, 0.9995, 0.9999994, 0.9999996, 59.9999999, 86399.9999996, 951782400.5,
         1_700_000_000.0, 1_700_000_000.999_999_7, 4_102_444_799.999_999, 253402300799.0]


@pytest.mark.parametrize("digits,timespec", [(3, "milliseconds"), (6, "microseconds")])
def test_the_text_is_what_datetime_writes(digits, timespec):
    rng = random.Random(20261206)
    now = time.time()
    samples = EDGES + [now + rng.uniform(-5, 5) for _ in range(20_000)] + [rng.uniform(0, 4e9) for _ in range(20_000)]
    for ts in samples:
        assert rfc3339_utc(ts, digits) == by_datetime(ts, timespec), ts


def test_a_later_second_is_formatted_anew_and_an_earlier_one_too():
    assert rfc3339_utc(1_700_000_001.25) == "2023-11-14T22:13:21.250Z"
    assert rfc3339_utc(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"
    assert rfc3339_utc(1_700_000_001.5, 6) == "2023-11-14T22:13:21.500000Z"
