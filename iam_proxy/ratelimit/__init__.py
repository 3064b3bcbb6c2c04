"""Rate limits (GCRA, in memory or shared through Redis) and adaptive load shedding toward the
upstreams; see docs/rate-limiting.md. The pipeline calls `Traffic.admit` once per request."""

from .gate import Admission, Traffic
from .limiter import Throttled

__all__ = ["Admission", "Throttled", "Traffic"]
