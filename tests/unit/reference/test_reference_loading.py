"""The packaged reference data loads, with the expected contents."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.reference import (
    OPERATORS_QUEUE,
    PACKAGED_DATA_DIR,
    DeadlineRule,
    ReferenceData,
    load_reference_data,
)

COMMUNITIES = ("liuyue", "huale", "hongmian", "songbai", "zhisheng", "silian")
DEPARTMENTS = (
    "fire",
    "safety_supervision",
    "police",
    "urban_management",
    "housing_rental",
    "gas",
    "roads",
)
CATEGORIES = (
    "locked_rooftop_door",
    "blocked_fire_passage",
    "ebike_indoor_charging",
    "direct_vent_water_heater",
    "three_in_one_premises",
    "group_rental_fire_hazard",
    "electrical_fire_hazard",
    "fire_equipment_missing",
    "sporadic_construction_works",
    "public_security_hazard",
    "gas_leak",
    "road_hazard",
    "illegal_structure",
    "other",
)


@pytest.fixture(scope="module")
def data() -> ReferenceData:
    return load_reference_data()


def test_default_directory_is_the_packaged_data(data: ReferenceData) -> None:
    assert load_reference_data(PACKAGED_DATA_DIR) == data


def test_packaged_departments_are_the_seven_functional_departments(data: ReferenceData) -> None:
    assert tuple(d.id for d in data.departments) == DEPARTMENTS
    assert OPERATORS_QUEUE not in {d.id for d in data.departments}
    assert data.department("safety_supervision").name_zh == "安监办"


def test_packaged_categories_cover_the_domain(data: ReferenceData) -> None:
    assert tuple(c.code for c in data.categories) == CATEGORIES
    groups = {c.code: c.group for c in data.categories}
    assert groups["public_security_hazard"] == "public_security"
    assert groups["sporadic_construction_works"] == "production_safety"
    assert sum(1 for g in groups.values() if g == "fire") == 8


def test_other_category_has_no_owner_and_no_routing_rule(data: ReferenceData) -> None:
    assert data.category("other").department_id is None
    assert all(rule.category != "other" for rule in data.routing_rules)


def test_every_category_but_other_has_a_generic_rule_to_its_owner(data: ReferenceData) -> None:
    for category in data.categories:
        if category.code == "other":
            continue
        generic = [r for r in data.routing_rules if r.category == category.code and r.community_id is None]
        assert generic[0].department_id == category.department_id, category.code


def test_packaged_street_has_six_communities_of_twelve_grids(data: ReferenceData) -> None:
    assert data.street.id == "henggang"
    assert tuple(c.id for c in data.communities) == COMMUNITIES
    for community in data.communities:
        assert [g.id for g in community.grids] == [f"{community.id}-{n:02d}" for n in range(1, 13)]
        assert all(g.community_id == community.id for g in community.grids)
    assert len(data.grids) == 72
    assert data.grid("liuyue-01").name_zh == "六约社区第01网格"
    assert data.community("zhisheng").name_zh == "志盛社区"


def test_packaged_deadlines_are_read_into_minutes(data: ReferenceData) -> None:
    rooftop = data.category("locked_rooftop_door")
    assert rooftop.receipt_deadline == DeadlineRule(minutes=120, working_time=True)
    # 3 working days x 7.5 working hours (08:30-12:00, 14:00-18:00)
    assert rooftop.rectification_deadline == DeadlineRule(minutes=3 * 450, working_time=True)
    assert rooftop.urgency_rule("urgent") == DeadlineRule(minutes=30, working_time=False)
    assert rooftop.relapse_window_days == 180
    assert data.category("gas_leak").relapse_window_days == 90


def test_packaged_calendar_thresholds_and_escalation(data: ReferenceData) -> None:
    assert data.calendar.timezone == "Asia/Shanghai"
    assert data.calendar.working_day_minutes == 450
    assert data.calendar.years == (2025, 2026)
    assert data.duplicate_distance_m == 30
    assert data.hotspot_min_relapses == 2
    steps = data.escalation_steps
    assert [(s.level, s.after.duration, s.target) for s in steps] == [
        (1, timedelta(0), "department"),
        (2, timedelta(hours=2), "supervisor"),
        (3, timedelta(hours=24), "district"),
    ]


def test_packaged_campaigns(data: ReferenceData) -> None:
    by_id = {c.id: c for c in data.campaigns}
    assert set(by_id) == {
        "spring-fire-2026",
        "direct-vent-heaters-2026",
        "rooftop-escape-routes-2026",
        "electrical-fire-2026",
        "rentals-three-in-one-2026",
        "sporadic-works-2026",
        "winter-fire-2026",
    }
    heaters = by_id["direct-vent-heaters-2026"].targets
    assert (heaters.found, heaters.notices_issued, heaters.rectified) == (3235, 3235, 3235)
    spring = by_id["spring-fire-2026"]
    assert (spring.starts_on.isoformat(), spring.ends_on.isoformat()) == ("2026-03-16", "2026-05-25")
    fire_codes = {c.code for c in data.categories if c.group == "fire"}
    assert set(spring.categories) == fire_codes


def test_reference_data_is_frozen_and_hashable(data: ReferenceData) -> None:
    with pytest.raises(ValidationError):
        data.thresholds = data.thresholds  # type: ignore[misc]
    assert hash(data) == hash(load_reference_data())


def test_model_copy_with_update_rebuilds_the_indexes(data: ReferenceData) -> None:
    without_rules = data.model_copy(update={"routing_rules": ()})
    assert without_rules.route("gas_leak") is None
    rule = data.route("gas_leak")
    assert rule is not None
    assert rule.id == "r-gas-leak"
