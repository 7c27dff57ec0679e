"""Lookups on the packaged reference data: ids, routing, campaigns, deadlines, area."""

from __future__ import annotations

from datetime import date

import pytest

from shared.reference import DeadlineRule, ReferenceData, RoutingRule, UnknownReference, load_reference_data


@pytest.fixture(scope="module")
def data() -> ReferenceData:
    return load_reference_data()


def _routed(rule: RoutingRule | None) -> tuple[str, str] | None:
    return None if rule is None else (rule.id, rule.department_id)


def test_category_lookup_and_unknown_code(data: ReferenceData) -> None:
    assert data.category("ebike_indoor_charging").name_zh == "电动自行车入户、楼道充电"
    with pytest.raises(UnknownReference) as caught:
        data.category("e_bike")
    assert isinstance(caught.value, KeyError)
    assert str(caught.value).startswith("unknown category 'e_bike'. Known categories: blocked_fire_passage, ")
    assert (caught.value.kind, caught.value.key) == ("category", "e_bike")


def test_department_grid_and_community_lookups(data: ReferenceData) -> None:
    assert data.department("police").name_zh == "横岗派出所"
    assert data.grid("silian-12").community_id == "silian"
    assert data.community_of_grid("huale-04").id == "huale"
    with pytest.raises(UnknownReference, match=r"^unknown department 'operators'"):
        data.department("operators")
    with pytest.raises(UnknownReference, match=r"^unknown grid 'liuyue-13'\. Known grids: hongmian-01, "):
        data.grid("liuyue-13")
    with pytest.raises(UnknownReference, match=r"^unknown community 'henggang'"):
        data.community("henggang")


def test_route_sends_a_category_to_its_generic_rule(data: ReferenceData) -> None:
    assert _routed(data.route("ebike_indoor_charging", "liuyue", "liuyue-05")) == (
        "r-ebike-indoor-charging",
        "fire",
    )
    assert _routed(data.route("public_security_hazard")) == ("r-public-security-hazard", "police")


def test_route_community_override_comes_first(data: ReferenceData) -> None:
    assert _routed(data.route("group_rental_fire_hazard", "silian", "silian-03")) == (
        "r-silian-group-rental",
        "housing_rental",
    )
    assert _routed(data.route("group_rental_fire_hazard", "songbai", "songbai-03")) == (
        "r-group-rental-fire-hazard",
        "fire",
    )


def test_route_grid_override_applies_only_in_that_grid(data: ReferenceData) -> None:
    assert _routed(data.route("electrical_fire_hazard", "huale", "huale-04")) == (
        "r-huale-04-electrical",
        "safety_supervision",
    )
    assert _routed(data.route("electrical_fire_hazard", "huale", "huale-05")) == (
        "r-electrical-fire-hazard",
        "fire",
    )
    assert _routed(data.route("electrical_fire_hazard", "huale")) == ("r-electrical-fire-hazard", "fire")


def test_route_derives_the_community_from_the_grid(data: ReferenceData) -> None:
    assert _routed(data.route("group_rental_fire_hazard", grid_id="silian-07")) == (
        "r-silian-group-rental",
        "housing_rental",
    )


def test_route_skips_excluded_departments(data: ReferenceData) -> None:
    returned_by_housing = data.route(
        "group_rental_fire_hazard", "silian", "silian-03", frozenset({"housing_rental"})
    )
    assert _routed(returned_by_housing) == ("r-group-rental-fire-hazard", "fire")
    returned_by_gas = data.route("direct_vent_water_heater", "liuyue", "liuyue-01", frozenset({"gas"}))
    assert _routed(returned_by_gas) == ("r-direct-vent-water-heater-fallback", "fire")


def test_route_returns_none_for_the_operators_queue(data: ReferenceData) -> None:
    assert data.route("other", "liuyue", "liuyue-01") is None
    assert data.route("gas_leak", "liuyue", "liuyue-01", frozenset({"gas"})) is None
    assert data.route("direct_vent_water_heater", None, None, frozenset({"gas", "fire"})) is None


def test_route_rejects_unknown_ids_and_a_grid_outside_the_community(data: ReferenceData) -> None:
    with pytest.raises(UnknownReference, match="unknown category 'fire'"):
        data.route("fire", "liuyue", "liuyue-01")
    with pytest.raises(UnknownReference, match="unknown community 'nowhere'"):
        data.route("gas_leak", "nowhere")
    with pytest.raises(UnknownReference, match="unknown grid 'liuyue-99'"):
        data.route("gas_leak", "liuyue", "liuyue-99")
    with pytest.raises(ValueError, match="grid 'silian-01' is in community 'silian', not 'liuyue'"):
        data.route("gas_leak", "liuyue", "silian-01")


def test_campaigns_active_on_a_date_for_a_category(data: ReferenceData) -> None:
    ids = [c.id for c in data.campaigns_active(date(2026, 4, 15), "locked_rooftop_door")]
    assert ids == ["spring-fire-2026", "rooftop-escape-routes-2026"]
    assert [c.id for c in data.campaigns_active(date(2026, 3, 15), "locked_rooftop_door")] == []
    assert [c.id for c in data.campaigns_active(date(2026, 5, 25), "electrical_fire_hazard")] == [
        "spring-fire-2026",
        "electrical-fire-2026",
    ]
    assert [c.id for c in data.campaigns_active(date(2026, 12, 31), "gas_leak")] == ["winter-fire-2026"]
    assert data.campaigns_active(date(2026, 12, 1), "road_hazard") == []


def test_campaigns_active_without_a_category_lists_all_running(data: ReferenceData) -> None:
    assert [c.id for c in data.campaigns_active(date(2026, 1, 5))] == [
        "direct-vent-heaters-2026",
        "rentals-three-in-one-2026",
        "sporadic-works-2026",
    ]
    with pytest.raises(UnknownReference):
        data.campaigns_active(date(2026, 1, 5), "fire")


def test_receipt_rule_by_urgency(data: ReferenceData) -> None:
    normal = DeadlineRule(minutes=120, working_time=True)
    urgent = DeadlineRule(minutes=30, working_time=False)
    assert data.receipt_rule("locked_rooftop_door") == normal
    assert data.receipt_rule("locked_rooftop_door", "normal") == normal
    assert data.receipt_rule("locked_rooftop_door", "urgent") == urgent
    # no urgent override: the default receipt deadline
    assert data.receipt_rule("direct_vent_water_heater", "urgent") == DeadlineRule(
        minutes=240, working_time=True
    )
    with pytest.raises(ValueError, match="unknown urgency 'critical'; known levels: normal, urgent"):
        data.receipt_rule("gas_leak", "critical")


def test_rectification_rule(data: ReferenceData) -> None:
    assert data.rectification_rule("gas_leak") == DeadlineRule(minutes=450, working_time=True)


def test_street_contains(data: ReferenceData) -> None:
    grid = data.grid("hongmian-06")
    assert data.street_contains(grid.center.lat, grid.center.lon)
    assert data.street_contains(22.640, 114.200)
    assert not data.street_contains(22.543, 114.058)  # Futian, central Shenzhen
    assert not data.street_contains(22.611, 114.200)  # just south of the street
    assert not data.street_contains(22.6135, 114.1595)  # in the cut south-west corner


def test_every_grid_center_lies_in_its_community_box(data: ReferenceData) -> None:
    for community in data.communities:
        for grid in community.grids:
            assert community.bbox.contains(grid.center.lat, grid.center.lon), grid.id
