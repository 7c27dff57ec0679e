"""The patterns' share of a hazard's CPU: work per hazard times the pattern floor's cost per event."""

from __future__ import annotations

import pytest

from bench.end_to_end import patterns_share


def test_applied_and_published_events_are_priced_at_the_floor_costs() -> None:
    floor = {
        "consume": {
            "cpu_ms_per_event": {"consumer": 0.03, "postgresql": 0.004, "broker": 0.002, "total": 0.036}
        },
        "cpu_ms_per_published_event": {"consumer": 0.1, "postgresql": 0.015, "broker": 0.01, "total": 0.125},
    }
    share = patterns_share({"events_applied": 5.5, "events_published": 2.0}, floor)
    assert share["cpu_ms_per_applied_event"] == 0.036
    assert share["cpu_ms_per_published_event"] == pytest.approx(0.125)
    assert share["cpu_ms_per_hazard"] == pytest.approx(5.5 * 0.036 + 2.0 * 0.125, abs=1e-3)


def test_the_floor_total_is_not_counted_twice_in_the_publish_cost() -> None:
    floor = {
        "consume": {"cpu_ms_per_event": {"consumer": 0.0, "total": 0.0}},
        "cpu_ms_per_published_event": {"consumer": 0.2, "total": 0.2},
    }
    assert patterns_share({"events_applied": 0, "events_published": 1}, floor)["cpu_ms_per_hazard"] == 0.2
