"""Pure intake decisions: validation against the reference, fingerprints, duplicates, events, Open311 status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake import domain
from services.intake.domain import OpenHazard, Policy, ReportIn
from shared import events as ev
from shared.reference import Campaign, load_reference_data

NOW = datetime(2026, 4, 10, 8, 0, tzinfo=UTC)
REFERENCE = load_reference_data()
POLICY = Policy(future_skew=timedelta(minutes=5), max_age=timedelta(days=30), duplicate_distance_m=30)
LAT, LON = 22.622, 114.16813


def make(**overrides: Any) -> ReportIn:
    location = {"lat": LAT, "lon": LON, "address": "building 1", "building_id": None}
    location.update(overrides.pop("location", {}))
    data: dict[str, Any] = {
        "report_id": str(uuid.uuid4()),
        "category": "locked_rooftop_door",
        "description": "door locked",
        "location": location,
        "grid_id": "liuyue-01",
        "observed_at": (NOW - timedelta(hours=1)).isoformat(),
    }
    data.update(overrides)
    return ReportIn.model_validate(data)


def check(report: ReportIn, grid: str | None = "liuyue-01") -> domain.Rejection | None:
    return domain.check_report(report, reporter_grid=grid, reference=REFERENCE, now=NOW, policy=POLICY)


def test_a_valid_report_passes() -> None:
    assert check(make()) is None


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"category": "burning_sofa"}, "unknown_category"),
        ({"grid_id": "nowhere-01"}, "unknown_grid"),
        ({"location": {"lat": 22.5, "lon": 114.2}}, "outside_street"),
        ({"observed_at": (NOW + timedelta(minutes=6)).isoformat()}, "observed_in_future"),
        ({"observed_at": (NOW - timedelta(days=30, minutes=1)).isoformat()}, "observed_too_long_ago"),
        ({"campaign_id": "nope"}, "unknown_campaign"),
        ({"campaign_id": "direct-vent-heaters-2026"}, "campaign_not_for_category"),
        ({"campaign_id": "winter-fire-2026"}, "campaign_not_active"),
    ],
)
def test_reference_checks_name_the_problem(overrides: dict[str, Any], code: str) -> None:
    rejection = check(make(**overrides))
    assert rejection is not None
    assert (rejection.status, rejection.code) == (422, code)
    assert [d["code"] for d in rejection.details] == [code]


def test_several_problems_are_reported_together() -> None:
    rejection = check(make(category="burning_sofa", location={"lat": 22.5, "lon": 114.2}))
    assert rejection is not None
    assert rejection.code == "invalid"
    assert [d["code"] for d in rejection.details] == ["unknown_category", "outside_street"]


def test_another_reporters_grid_is_403() -> None:
    rejection = check(make(), grid="liuyue-02")
    assert rejection is not None
    assert (rejection.status, rejection.code) == (403, "grid_not_yours")


def test_clock_skew_and_age_limits_are_inclusive_of_their_margin() -> None:
    assert check(make(observed_at=(NOW + timedelta(minutes=5)).isoformat())) is None
    assert check(make(observed_at=(NOW - timedelta(days=30)).isoformat())) is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"photos": ["ftp://x.org/a.jpg"]},
        {"photos": ["https:///no-host.jpg"]},
        {"photos": ["x"] * 11},
        {"description": ""},
        {"description": "d" * 2001},
        {"observed_at": "2026-04-10T08:00:00"},
        {"unknown": 1},
        {"location": {"lat": float("nan")}},
        {"rectified_on_site": "true"},
    ],
)
def test_schema_refuses_bad_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make(**overrides)


def test_the_fingerprint_ignores_how_a_time_is_written_but_not_the_content() -> None:
    report = make()
    same = report.model_copy(update={"observed_at": report.observed_at.astimezone(REFERENCE.calendar.zone)})
    assert domain.body_hash(report, reporter_id="a") == domain.body_hash(same, reporter_id="a")
    assert domain.body_hash(report, reporter_id="a") != domain.body_hash(report, reporter_id="b")
    changed = report.model_copy(update={"description": "other"})
    assert domain.body_hash(report, reporter_id="a") != domain.body_hash(changed, reporter_id="a")
    later = report.model_copy(update={"observed_at": report.observed_at + timedelta(seconds=1)})
    assert domain.body_hash(report, reporter_id="a", server_stamped_time=True) == domain.body_hash(
        later, reporter_id="a", server_stamped_time=True
    )


def test_campaigns_are_the_named_one_then_every_active_one_for_the_category() -> None:
    assert domain.campaign_ids(make(), REFERENCE) == ("spring-fire-2026", "rooftop-escape-routes-2026")
    named = make(campaign_id="rooftop-escape-routes-2026")
    assert domain.campaign_ids(named, REFERENCE) == ("rooftop-escape-routes-2026", "spring-fire-2026")
    # The street's date counts: 23:30 UTC on 15 March is already 16 March in Shenzhen.
    edge = make(observed_at="2026-03-15T23:30:00+00:00")
    extra = Campaign(
        id="x",
        name_en="x",
        name_zh="x",
        starts_on=datetime(2026, 3, 16).date(),
        ends_on=datetime(2026, 3, 16).date(),
        categories=("locked_rooftop_door",),
    )
    reference = REFERENCE.model_copy(update={"campaigns": (extra,)})
    assert domain.campaign_ids(edge, reference) == ("x",)


def open_hazard(category: str = "locked_rooftop_door", **kw: Any) -> OpenHazard:
    base: dict[str, Any] = {
        "hazard_id": uuid.uuid4(),
        "category": category,
        "building_id": None,
        "lat": LAT,
        "lon": LON,
        "requested_at": NOW - timedelta(days=1),
    }
    base.update(kw)
    return OpenHazard(**base)


def test_same_building_wins_over_a_nearer_hazard() -> None:
    near = open_hazard(lat=LAT + 0.00005)
    building = open_hazard(building_id="b1", lat=LAT + 0.002)
    match = domain.find_open_duplicate(make(location={"building_id": "b1"}), [near, building], distance_m=30)
    assert match is not None
    assert match.original_hazard_id == building.hazard_id
    assert match.same_building is True


def test_the_nearest_open_hazard_within_range_of_the_same_category_is_the_original() -> None:
    far = open_hazard(lat=LAT + 0.0003)  # ~33 m
    near = open_hazard(lat=LAT + 0.0001)  # ~11 m
    other_category = open_hazard("gas_leak")
    match = domain.find_open_duplicate(make(), [far, near, other_category], distance_m=30)
    assert match is not None
    assert match.original_hazard_id == near.hazard_id
    assert 10 < match.distance_m < 12
    assert domain.find_open_duplicate(make(), [far, other_category], distance_m=30) is None
    assert domain.find_open_duplicate(make(), [far], distance_m=40) is not None


def test_an_on_site_fix_is_never_a_duplicate() -> None:
    assert domain.find_open_duplicate(make(rectified_on_site=True), [open_hazard()], distance_m=30) is None


def test_reported_events_carry_the_link_and_stable_ids() -> None:
    report = make(urgency="urgent", photos=["https://x.org/a.jpg"])
    hazard_id, original = uuid.uuid4(), uuid.uuid4()
    match = domain.DuplicateMatch(original, 12.5, False)
    reported, linked = domain.reported_events(
        hazard_id=hazard_id,
        report=report,
        reporter_id="gm-1",
        reference=REFERENCE,
        accepted_at=NOW,
        source="batch",
        campaigns=("spring-fire-2026",),
        duplicate=match,
    )
    assert isinstance(reported, ev.HazardReported)
    assert isinstance(linked, ev.HazardDuplicateLinked)
    assert reported.event_id == domain.reported_event_id(report.report_id)
    assert reported.payload.duplicate_of == original
    assert reported.payload.community_id == "liuyue"
    assert reported.payload.urgency == "urgent"
    assert linked.causation_id == reported.event_id
    assert linked.payload == ev.HazardDuplicateLinkedPayload(
        original_hazard_id=original, distance_m=12.5, same_building=False
    )
    # Round trip through the wire format.
    assert ev.parse_event(ev.dump_event(reported)) == reported


def test_initial_view() -> None:
    assert domain.initial_view(make(), None)[0] == "open"
    assert domain.initial_view(make(rectified_on_site=True), None)[0] == "closed"
    status, notes, notice = domain.initial_view(make(), domain.DuplicateMatch(uuid.uuid4(), 3.0, True))
    assert status == "open"
    assert notice is not None
    assert notice == notes


def test_status_changes_from_lifecycle_events() -> None:
    h = uuid.uuid4()
    rule = ev.FrozenDeadlineRule(minutes=120, working_time=True)
    due = NOW + timedelta(hours=2)

    def event(cls: Any, payload: Any) -> Any:
        return cls(event_id=uuid.uuid4(), occurred_at=NOW, hazard_id=h, producer="test", payload=payload)

    dispatched = domain.status_change(
        event(
            ev.HazardDispatched,
            ev.HazardDispatchedPayload(
                dispatch_id=uuid.uuid4(),
                department_id="police",
                rule_id=None,
                receipt_deadline=due,
                deadline_rule=rule,
            ),
        ),
        reference=REFERENCE,
    )
    assert dispatched is not None
    assert dispatched.agency == REFERENCE.department("police").name_en
    assert dispatched.expected == due
    assert not dispatched.closes
    referred = domain.status_change(
        event(ev.HazardReferredToOperators, ev.HazardReferredToOperatorsPayload(reason="no_rule")),
        reference=REFERENCE,
    )
    assert referred is not None
    assert referred.clear_expected
    closed = domain.status_change(
        event(
            ev.HazardClosed,
            ev.HazardClosedPayload(reason="verified", department_id="fire", closed_by="gm"),
        ),
        reference=REFERENCE,
    )
    assert closed is not None
    assert closed.closes
    assert closed.clear_expected
    assert closed.agency == REFERENCE.department("fire").name_en
    assert closed.notes == "Closed (verified rectification)."
    # A fix on the spot was closed by intake when it accepted the report: its closure changes nothing.
    on_site = domain.status_change(
        event(ev.HazardClosed, ev.HazardClosedPayload(reason="rectified_on_site", closed_by="gm")),
        reference=REFERENCE,
    )
    assert on_site is None
    failed = domain.status_change(
        event(ev.HazardVerified, ev.HazardVerifiedPayload(passed=False, verified_by="gm")),
        reference=REFERENCE,
    )
    assert failed is not None
    assert "rework" in failed.notes
    overdue = event(
        ev.HazardReceiptOverdue,
        ev.HazardReceiptOverduePayload(dispatch_id=uuid.uuid4(), department_id="fire", receipt_deadline=due),
    )
    assert domain.status_change(overdue, reference=REFERENCE) is None


def test_reported_events_carry_the_reporter_type_and_a_notice_issued_on_the_spot() -> None:
    report = make(notice_issued=True)
    (reported,) = domain.reported_events(
        hazard_id=uuid.uuid4(),
        report=report,
        reporter_id="bm-7",
        reporter_type="building_manager",
        reference=REFERENCE,
        accepted_at=NOW,
        source="app",
        campaigns=(),
        duplicate=None,
    )
    assert isinstance(reported, ev.HazardReported)
    assert (reported.payload.reporter_type, reported.payload.notice_issued) == ("building_manager", True)
    assert ev.parse_event(ev.dump_event(reported)) == reported
    (plain,) = domain.reported_events(
        hazard_id=uuid.uuid4(),
        report=make(),
        reporter_id="gm-1",
        reference=REFERENCE,
        accepted_at=NOW,
        source="app",
        campaigns=(),
        duplicate=None,
    )
    assert isinstance(plain, ev.HazardReported)
    assert (plain.payload.reporter_type, plain.payload.notice_issued) == ("grid_member", False)


def test_a_report_without_a_notice_hashes_as_before_the_field_existed() -> None:
    import hashlib

    import orjson

    report = make()
    before = report.model_dump(mode="json")
    del before["notice_issued"]  # what a stored report's fingerprint was made of
    before["observed_at"] = report.observed_at.astimezone(UTC).isoformat()
    before["reporter_id"] = "gm-1"
    old_hash = hashlib.sha256(orjson.dumps(before, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert domain.body_hash(report, reporter_id="gm-1") == old_hash
    with_notice = make(
        report_id=str(report.report_id), observed_at=report.observed_at.isoformat(), notice_issued=True
    )
    assert domain.body_hash(with_notice, reporter_id="gm-1") != old_hash  # another body under that id: 409


def test_notice_issued_must_be_a_boolean() -> None:
    with pytest.raises(ValidationError):
        make(notice_issued="yes")


def test_a_report_naming_an_ended_campaign_is_accepted_one_not_begun_is_not() -> None:
    # spring-fire-2026 ran 2026-03-16 to 2026-05-25: a report of June names it, counted late (#18).
    june = datetime(2026, 6, 10, 8, 0, tzinfo=UTC)
    late = make(campaign_id="spring-fire-2026", observed_at=(june - timedelta(hours=1)).isoformat())
    assert (
        domain.check_report(late, reporter_grid="liuyue-01", reference=REFERENCE, now=june, policy=POLICY)
        is None
    )
    assert domain.campaign_ids(late, REFERENCE)[0] == "spring-fire-2026"


def test_reporter_scope_hotline_operators_and_building_managers() -> None:
    from shared.auth import Principal

    report = make(grid_id="liuyue-02", location={"building_id": "b9"})
    hotline = Principal("hl-1", "reporter", None, None, "hotline")
    assert domain.reporter_scope(hotline, report) == ("liuyue-02", None)
    manager = Principal("bm-1", "reporter", "liuyue-02", None, "building_manager", ("b7", "b8"))
    grid, refused = domain.reporter_scope(manager, report)
    assert refused is not None
    assert (grid, refused.status, refused.code) == ("liuyue-02", 403, "building_not_yours")
    own = make(grid_id="liuyue-02", location={"building_id": "b8"})
    assert domain.reporter_scope(manager, own) == ("liuyue-02", None)
    member = Principal("gm-1", "reporter", "liuyue-01")
    assert domain.reporter_scope(member, report) == ("liuyue-01", None)
