"""A per-reporter token bucket, kept in this process (so the limit holds per replica)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Refills ``rate`` tokens a second up to ``burst``; each request takes one token."""

    def __init__(self, *, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, *, now: float) -> float:
        """0 when the request may go ahead, else the seconds to wait before trying again."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def retry_after_header(self, wait_s: float) -> str:
        """Whole seconds for Retry-After (at least 1)."""
        return str(max(1, math.ceil(wait_s)))

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely (they behave like new ones)."""
        for key in [
            k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]:
            del self._buckets[key]
