"""Broken reference data is refused with a message naming the file, the entry and the problem."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from shared.reference import PACKAGED_DATA_DIR, DeadlineRule, ReferenceDataError, load_reference_data

KNOWN_DEPARTMENTS = "fire, safety_supervision, police, urban_management, housing_rental, gas, roads"


def data_dir_with(tmp_path: Path, file: str, old: str, new: str, count: int = 1) -> Path:
    """A copy of the packaged data with `old` replaced by `new` in `file`."""
    target = tmp_path / "data"
    shutil.copytree(PACKAGED_DATA_DIR, target)
    path = target / file
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times in {file}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return target


def problems_of(directory: Path) -> tuple[str, ...]:
    with pytest.raises(ReferenceDataError) as caught:
        load_reference_data(directory)
    return caught.value.problems


def test_unknown_department_in_a_routing_rule(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path,
        "routing.yaml",
        "community_id: silian, department_id: housing_rental",
        "community_id: silian, department_id: housing",
    )
    assert problems_of(directory) == (
        f"routing.yaml, rule 'r-silian-group-rental': unknown department 'housing'. "
        f"Known departments: {KNOWN_DEPARTMENTS}",
    )


def test_error_message_has_a_header_and_one_line_per_problem(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "routing.yaml", "department_id: urban_management}", "department_id: urban}"
    )
    with pytest.raises(ValueError, match="unknown department 'urban'") as caught:
        load_reference_data(directory)
    assert str(caught.value) == (
        f"invalid reference data in {directory}: 1 problem\n"
        f"- routing.yaml, rule 'r-illegal-structure': unknown department 'urban'. "
        f"Known departments: {KNOWN_DEPARTMENTS}"
    )


def test_unknown_department_of_a_category(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "categories.yaml", "department_id: roads", "department_id: transport")
    assert problems_of(directory) == (
        f"categories.yaml, category 'road_hazard': unknown department 'transport'. "
        f"Known departments: {KNOWN_DEPARTMENTS}",
    )


def test_duplicate_category_code(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "categories.yaml", "code: fire_equipment_missing", "code: other")
    problems = problems_of(directory)
    assert "categories.yaml, category 'other': duplicate id (entries #8 and #14)" in problems


def test_duplicate_grid_id(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "places.yaml", "{id: songbai-12,", "{id: songbai-11,")
    assert problems_of(directory) == ("places.yaml, grid 'songbai-11': duplicate id (entries #47 and #48)",)


def test_operators_is_not_a_department(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "departments.yaml", "- id: roads", "- id: operators")
    problems = problems_of(directory)
    assert (
        "departments.yaml, department 'operators': 'operators' is reserved for the operators' queue"
        in problems
    )


def test_bad_yaml_syntax_names_the_entry_and_the_line(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "campaigns.yaml", "name_zh: 电气火灾综合治理", "name_zh: 电气火灾: 综合治理"
    )
    assert problems_of(directory) == (
        "campaigns.yaml, near entry 'electrical-fire-2026': invalid YAML at line 39, column 18: "
        "mapping values are not allowed here",
    )


def test_impossible_date_is_a_yaml_problem_with_its_position(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "calendar.yaml", "first_day: 2026-06-19", "first_day: 2026-06-31")
    (problem,) = problems_of(directory)
    assert problem.startswith("calendar.yaml, near entry '2026-dragon-boat': invalid YAML at line ")
    assert problem.endswith("invalid date '2026-06-31': day is out of range for month")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path,
        "settings.yaml",
        "hotspot_min_relapses: 2",
        "hotspot_min_relapses: 2\nduplicate_distance_m: 50",
    )
    assert problems_of(directory) == (
        "settings.yaml: invalid YAML at line 6, column 1: found duplicate key 'duplicate_distance_m' "
        "(while constructing a mapping)",
    )


def test_grid_outside_the_street(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path,
        "places.yaml",
        "center: {lat: 22.65500, lon: 114.22437}",
        "center: {lat: 22.75500, lon: 114.22437}",
    )
    assert problems_of(directory) == (
        "places.yaml, grid 'silian-06': center (22.755, 114.22437) is outside street 'henggang' area",
    )


def test_grid_outside_its_community(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path,
        "places.yaml",
        "六约社区第01网格, center: {lat: 22.62200, lon: 114.16813}}",
        "六约社区第01网格, center: {lat: 22.62200, lon: 114.20000}}",
    )
    assert problems_of(directory) == (
        "places.yaml, grid 'liuyue-01': center (22.622, 114.2) is outside community 'liuyue' bbox",
    )


def test_unknown_field(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "departments.yaml", "    name_zh: 安监办\n", "    name_zh: 安监办\n    colour: red\n"
    )
    assert problems_of(directory) == (
        "departments.yaml, department 'safety_supervision': unknown field 'colour'",
    )


def test_missing_field_inside_a_nested_entry(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "places.yaml", "center: {lat: 22.63000, lon: 114.22437}", "center: {lat: 22.63000}"
    )
    assert problems_of(directory) == (
        "places.yaml, community 'hongmian', grid 'hongmian-06': missing field 'center.lon'",
    )


def test_invalid_field_value_names_the_field_and_the_value(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "categories.yaml", "relapse_window_days: 60", "relapse_window_days: sixty"
    )
    assert problems_of(directory) == (
        "categories.yaml, category 'ebike_indoor_charging': field 'relapse_window_days': "
        "Input should be a valid integer (got 'sixty')",
    )


def test_deadline_rule_with_two_units(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path,
        "categories.yaml",
        "rectification_deadline: {days: 1, working_time: true}",
        "rectification_deadline: {days: 1, hours: 4, working_time: true}",
    )
    assert problems_of(directory) == (
        "categories.yaml, category 'gas_leak': field 'rectification_deadline': "
        "give exactly one of minutes, hours, days (given: hours, days)",
    )


def test_routing_rule_grid_outside_its_community(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path,
        "routing.yaml",
        "community_id: huale, grid_id: huale-04",
        "community_id: silian, grid_id: huale-04",
    )
    assert problems_of(directory) == (
        "routing.yaml, rule 'r-huale-04-electrical': "
        "grid 'huale-04' belongs to community 'huale', not 'silian'",
    )


def test_routing_rule_unknown_category_and_grid(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path,
        "routing.yaml",
        "category: electrical_fire_hazard, community_id: huale, grid_id: huale-04",
        "category: electrical, community_id: huale, grid_id: huale-40",
    )
    problems = problems_of(directory)
    assert problems[0].startswith(
        "routing.yaml, rule 'r-huale-04-electrical': unknown category 'electrical'. "
        "Known categories: locked_rooftop_door, "
    )
    assert problems[1].startswith(
        "routing.yaml, rule 'r-huale-04-electrical': unknown grid 'huale-40'. Known grids: liuyue-01, "
    )
    assert len(problems) == 2


def test_override_placed_after_its_generic_rule(tmp_path: Path) -> None:
    line = (
        "  - {id: r-silian-group-rental, category: group_rental_fire_hazard, community_id: silian, "
        "department_id: housing_rental}\n"
    )
    directory = data_dir_with(tmp_path, "routing.yaml", line, "")
    routing = directory / "routing.yaml"
    routing.write_text(routing.read_text(encoding="utf-8") + line, encoding="utf-8")
    assert problems_of(directory) == (
        "routing.yaml, rule 'r-silian-group-rental': more specific than the earlier rule "
        "'r-group-rental-fire-hazard', so it is reached only when 'fire' is excluded; "
        "put overrides before generic rules",
    )


def test_redundant_rule(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path,
        "routing.yaml",
        "category: direct_vent_water_heater, department_id: fire}",
        "category: direct_vent_water_heater, department_id: gas}",
    )
    assert problems_of(directory) == (
        "routing.yaml, rule 'r-direct-vent-water-heater-fallback': never used, earlier rule "
        "'r-direct-vent-water-heater' already sends this category and place to 'gas'",
    )


def test_campaign_unknown_category_and_reversed_window(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "campaigns.yaml", "categories: [electrical_fire_hazard]", "categories: [electrical_fire]"
    )
    assert problems_of(directory) == (
        "campaigns.yaml, campaign 'electrical-fire-2026': unknown category 'electrical_fire'. "
        "Known categories: locked_rooftop_door, blocked_fire_passage, ebike_indoor_charging, "
        "direct_vent_water_heater, three_in_one_premises, group_rental_fire_hazard, electrical_fire_hazard, "
        "fire_equipment_missing, sporadic_construction_works, public_security_hazard, gas_leak, road_hazard, "
        "... (14 in total)",
    )
    reversed_dir = data_dir_with(
        tmp_path / "second", "campaigns.yaml", "ends_on: 2026-12-31", "ends_on: 2026-10-31"
    )
    assert problems_of(reversed_dir) == (
        "campaigns.yaml, campaign 'winter-fire-2026': ends_on 2026-10-31 is before starts_on 2026-11-01",
    )


def test_make_up_day_that_is_also_a_holiday(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "calendar.yaml", "{day: 2026-10-10,", "{day: 2026-10-03,")
    assert problems_of(directory) == (
        "calendar.yaml: make-up day 2026-10-03 is also a holiday (in '2026-national-day')",
    )


def test_make_up_day_on_a_weekday(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "calendar.yaml", "{day: 2025-09-28,", "{day: 2025-09-29,")
    assert problems_of(directory) == (
        "calendar.yaml: make-up day 2025-09-29 is a Monday; make-up days are weekend days worked",
    )


def test_unquoted_working_hours(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "calendar.yaml", '{start: "14:00", end: "18:00"}', "{start: 14:00, end: 18:00}"
    )
    assert problems_of(directory) == (
        "calendar.yaml, working interval #2: field 'start': write times as quoted 'HH:MM' strings, got 840",
        "calendar.yaml, working interval #2: field 'end': write times as quoted 'HH:MM' strings, got 1080",
    )


def test_escalation_levels_must_increase(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "escalation.yaml", "level: 3", "level: 2")
    assert problems_of(directory) == (
        "escalation.yaml, step level 2: level must be greater than the previous step's level 2",
    )


def test_escalation_after_must_not_decrease(tmp_path: Path) -> None:
    directory = data_dir_with(tmp_path, "escalation.yaml", "hours: 24", "hours: 1")
    assert problems_of(directory) == (
        "escalation.yaml, step level 3: 'after' (60 min) is earlier than the previous step's (120 min)",
    )


def test_missing_and_empty_files(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "settings.yaml", "duplicate_distance_m: 30", "duplicate_distance_m: 30"
    )
    (directory / "escalation.yaml").unlink()
    (directory / "settings.yaml").write_text("# nothing yet\n", encoding="utf-8")
    (directory / "departments.yaml").write_text("- fire\n- police\n", encoding="utf-8")
    assert problems_of(directory) == (
        "departments.yaml: expected a mapping at the top level, the file is a list",
        "escalation.yaml: file not found",
        "settings.yaml: expected a mapping at the top level, the file is empty",
    )


def test_missing_directory(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nowhere") == (f"{tmp_path / 'nowhere'}: not a directory",)


def test_problems_in_several_files_are_all_reported(tmp_path: Path) -> None:
    directory = data_dir_with(
        tmp_path, "departments.yaml", "    name_zh: 安监办\n", "    name_zh: 安监办\n    colour: red\n"
    )
    settings = directory / "settings.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8").replace("duplicate_distance_m: 30", "duplicate_distance_m: -5"),
        encoding="utf-8",
    )
    assert problems_of(directory) == (
        "departments.yaml, department 'safety_supervision': unknown field 'colour'",
        "settings.yaml: field 'duplicate_distance_m': Input should be greater than 0 (got '-5')",
    )


def test_reference_data_error_pickles() -> None:
    error = ReferenceDataError(["a.yaml: broken"], Path("/tmp/x"))
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.problems, copy.directory, str(copy)) == (error.problems, error.directory, str(error))


def test_working_days_need_the_calendar() -> None:
    with pytest.raises(ValueError, match="days of working time need the calendar's working-day length"):
        DeadlineRule.model_validate({"days": 2, "working_time": True})
    assert DeadlineRule.model_validate({"hours": 2, "working_time": False}).minutes == 120
