"""The per-reporter token bucket."""

from __future__ import annotations

from services.intake.ratelimit import RateLimiter


def test_a_burst_then_the_refill_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a", now=0.0)
    assert wait == 0.5
    assert limiter.retry_after_header(wait) == "1"
    assert limiter.take("a", now=0.5) == 0.0
    assert limiter.take("a", now=0.5) > 0
    # Each reporter has a bucket of their own.
    assert limiter.take("b", now=0.5) == 0.0


def test_a_full_bucket_never_exceeds_the_burst() -> None:
    limiter = RateLimiter(rate=100.0, burst=2)
    limiter.take("a", now=0.0)
    assert [limiter.take("a", now=1000.0) for _ in range(3)][2] > 0


def test_idle_buckets_are_forgotten_when_too_many_are_kept() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2)
    limiter.take("a", now=0.0)
    limiter.take("b", now=0.0)
    limiter.take("c", now=10.0)  # a and b have refilled: dropped
    assert limiter.take("a", now=10.0) == 0.0
