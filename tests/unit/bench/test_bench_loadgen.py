"""The load generator's pure parts: the category mix, the schedule, the reports and the principals."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from datetime import UTC, datetime

import pytest
import yaml

from bench.loadgen import (
    GROUP_SHARES,
    BehaviourMix,
    CategoryMix,
    ReportPlanner,
    batch_probability,
    building,
    department_action,
    load_principals,
    make_principals,
    percentile,
    schedule,
    submission_sizes,
    write_token_files,
)
from shared.reference import load_reference_data

REFERENCE = load_reference_data()
NOW = datetime(2026, 4, 7, 9, 30, tzinfo=UTC)


def test_category_mix_weights_sum_to_one_and_follow_the_group_shares() -> None:
    mix = CategoryMix(REFERENCE)
    assert sum(mix.weights.values()) == pytest.approx(1.0)
    by_group: Counter[str] = Counter()
    for code, weight in mix.weights.items():
        by_group[mix.group_of[code]] += weight
    assert by_group["fire"] == pytest.approx(GROUP_SHARES["fire"])
    assert by_group["public_security"] == pytest.approx(GROUP_SHARES["public_security"])
    assert by_group["other"] == pytest.approx(GROUP_SHARES["other"])
    assert set(mix.weights) == {c.code for c in REFERENCE.categories}


def test_drawn_categories_match_the_street_mix_within_sampling_error() -> None:
    mix = CategoryMix(REFERENCE)
    rng = random.Random(1)
    draws = Counter(mix.group_of[mix.pick(rng)] for _ in range(50_000))
    assert draws["fire"] / 50_000 == pytest.approx(0.79, abs=0.01)
    assert draws["public_security"] / 50_000 == pytest.approx(0.014, abs=0.003)
    assert draws["other"] / 50_000 == pytest.approx(0.196, abs=0.01)


def test_schedule_offers_reports_at_the_rate_counting_batch_sizes() -> None:
    assert schedule([1, 1, 10, 1], rate=500) == [0.0, 0.002, 0.004, 0.024]
    with pytest.raises(ValueError):
        schedule([1], rate=0)


def test_submission_sizes_sum_to_the_total_and_put_the_batch_share_in_batches() -> None:
    behaviour = BehaviourMix(batch_share=0.3, batch_min=5, batch_max=60)
    sizes = submission_sizes(random.Random(3), 100_000, behaviour)
    assert sum(sizes) == 100_000
    in_batches = sum(s for s in sizes if s > 1)
    assert in_batches / 100_000 == pytest.approx(0.3, abs=0.03)
    assert all(1 <= s <= 60 for s in sizes)


def test_batch_probability_edges() -> None:
    assert batch_probability(BehaviourMix(batch_share=0)) == 0
    assert batch_probability(BehaviourMix(batch_share=1)) == 1
    assert submission_sizes(random.Random(1), 50, BehaviourMix(batch_share=0)) == [1] * 50


def test_department_behaviour_shares() -> None:
    behaviour = BehaviourMix()
    rng = random.Random(5)
    actions = Counter()
    for _ in range(20_000):
        action = department_action(rng, behaviour)
        actions["return" if action.returns else action.acknowledge] += 1
    assert actions["return"] / 20_000 == pytest.approx(behaviour.returns, abs=0.01)
    assert actions["on_time"] / 20_000 == pytest.approx((1 - behaviour.returns) * 0.78, abs=0.015)
    assert actions["late"] > 0
    assert actions["never"] > 0


def test_reports_are_valid_bodies_inside_the_reporters_grid() -> None:
    principals = make_principals(REFERENCE)
    planner = ReportPlanner(REFERENCE, principals, rng=random.Random(9), clock=lambda: NOW)
    owners = {p.principal: p.grid_id for p in principals}
    for _ in range(500):
        planned = planner.report()
        body = planned.body
        assert owners[planned.reporter] == body["grid_id"] == planned.grid_id
        assert body["category"] in {c.code for c in REFERENCE.categories}
        assert REFERENCE.street_contains(body["location"]["lat"], body["location"]["lon"])
        community = REFERENCE.community_of_grid(body["grid_id"])
        assert community.bbox.contains(body["location"]["lat"], body["location"]["lon"])
        assert datetime.fromisoformat(body["observed_at"]) < NOW
        assert isinstance(body["rectified_on_site"], bool)


def test_the_distinct_mix_never_repeats_a_hazard_and_every_report_has_a_department() -> None:
    from shared.reference.geo import haversine_m

    principals = make_principals(REFERENCE)
    owners = {p.principal: p.grid_id for p in principals}
    planner = ReportPlanner(
        REFERENCE, principals, rng=random.Random(5), behaviour=BehaviourMix(distinct=True), clock=lambda: NOW
    )
    by_category: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    grid = planner.grids[0]
    # A batch stays in its grid; single reports go anywhere.
    reports = [planner.report(grid_id=grid) for _ in range(300)] + [planner.report() for _ in range(3000)]
    for planned in reports:
        body = planned.body
        assert owners[planned.reporter] == body["grid_id"]
        assert body["rectified_on_site"] is False
        assert REFERENCE.route(body["category"], grid_id=body["grid_id"]) is not None
        community = REFERENCE.community_of_grid(body["grid_id"])
        assert community.bbox.contains(body["location"]["lat"], body["location"]["lon"])
        where = (body["location"]["lat"], body["location"]["lon"], body["location"]["building_id"])
        by_category.setdefault((body["grid_id"], body["category"]), []).append(where)
    assert all(p.grid_id == grid for p in reports[:300])
    assert planner.places is not None
    assert planner.places.reused == 0
    distance = REFERENCE.duplicate_distance_m
    for places in by_category.values():
        assert len({b for _, _, b in places}) == len(places), "a building twice in one category"
        for i, (lat, lon, _) in enumerate(places):
            for lat2, lon2, _ in places[i + 1 :]:
                assert haversine_m(lat, lon, lat2, lon2) > distance


def test_the_same_building_keeps_its_place_so_relapses_land_on_it() -> None:
    first = building(REFERENCE, "liuyue-01", 17)
    again = building(REFERENCE, "liuyue-01", 17)
    other = building(REFERENCE, "liuyue-01", 18)
    assert first == again
    assert (first.lat, first.lon) != (other.lat, other.lon)
    planner = ReportPlanner(REFERENCE, make_principals(REFERENCE), rng=random.Random(2), clock=lambda: NOW)
    relapse = planner.report(grid_id="liuyue-01", category="locked_rooftop_door", building_number=17)
    assert relapse.body["location"]["building_id"] == first.building_id
    assert relapse.body["location"]["lat"] == first.lat


def test_principals_cover_every_grid_and_department_and_round_trip_through_files(tmp_path) -> None:
    principals = make_principals(REFERENCE)
    assert {p.grid_id for p in principals if p.role == "reporter"} == {g.id for g in REFERENCE.grids}
    assert {p.department_id for p in principals if p.role == "department"} == {
        d.id for d in REFERENCE.departments
    }
    assert {p.role for p in principals} == {"reporter", "department", "operator", "supervisor"}
    hashed, plain = write_token_files(principals, tmp_path)
    entries = yaml.safe_load(hashed.read_text())
    assert len(entries) == len(principals)
    by_name = {p.principal: p for p in principals}
    for entry in entries:
        assert entry["token_sha256"] == hashlib.sha256(by_name[entry["principal"]].token.encode()).hexdigest()
    assert not any(p.token in hashed.read_text() for p in principals), "no plain token in the hashed file"
    assert load_principals(plain) == principals


def test_reads_the_runners_demo_tokens_file(tmp_path) -> None:
    demo = tmp_path / "demo-tokens.txt"
    demo.write_text(
        "# header\n# principal\trole\tscope\ttoken\n"
        "gm-liuyue-01\treporter\tgrid=liuyue-01\tAAA\n"
        "dept-fire\tdepartment\tdepartment=fire\tBBB\n"
        "supervisor-01\tsupervisor\t-\tCCC\n"
    )
    loaded = load_principals(demo)
    assert [(p.principal, p.role, p.grid_id, p.department_id, p.token) for p in loaded] == [
        ("gm-liuyue-01", "reporter", "liuyue-01", None, "AAA"),
        ("dept-fire", "department", None, "fire", "BBB"),
        ("supervisor-01", "supervisor", None, None, "CCC"),
    ]


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


async def test_relapse_reports_are_seen_after_the_closure_at_the_claimed_rate() -> None:
    """Issue 21 item 4: a relapse observed before the closure is no relapse (tracking's rule), and
    the demo's relapses were observed up to 4 hours before a closure seconds old: ~1 % counted."""
    from datetime import timedelta

    import httpx

    from bench.loadgen import Accepted, LoadGenerator, Submission

    principals = make_principals(REFERENCE)
    gen = LoadGenerator(intake="http://intake", tracking="http://tracking", principals=principals, seed=5)
    closed_at = datetime.now(UTC) - timedelta(seconds=30)  # closed just before, as in the demo
    grids = gen.planner.grids
    for n in range(400):
        gen.result.accepted.append(
            Accepted(
                report_id=f"r{n}",
                hazard_id=f"00000000-0000-4000-8000-{n:012d}",
                grid_id=grids[n % len(grids)],
                category="locked_rooftop_door",
                on_site=False,
                building_id=f"{grids[n % len(grids)]}-b{n + 1}",
                duplicate_of=None,
                scheduled_at=0.0,
                sent_at=0.0,
                accepted_at=0.0,
                batch=False,
            )
        )

    def case(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"state": "closed", "closed": {"at": closed_at.isoformat()}})

    sent: list[Submission] = []

    async def capture(submissions: list[Submission], **_: object) -> None:
        sent.extend(submissions)

    gen.send_reports = capture  # type: ignore[method-assign,assignment]
    async with httpx.AsyncClient(transport=httpx.MockTransport(case)) as client:
        await gen.play_relapses(client)
    relapses = [r for s in sent for r in s.reports]
    # The claimed share of the closed hazards (0.10 of 400), different buildings ...
    assert len(relapses) == 40
    assert len({r.building_id for r in relapses}) == 40
    # ... every one of them seen after the closure it relapses from, and not in the future.
    seen = [datetime.fromisoformat(r.body["observed_at"]) for r in relapses]
    assert all(closed_at < s <= datetime.now(UTC) for s in seen), [s.isoformat() for s in seen[:5]]


async def test_a_second_wave_relapses_only_relapses_again_at_their_place() -> None:
    """Chronic places (the demo's hotspots): closed relapses come back, ``relapse_again`` of them."""
    from datetime import timedelta

    import httpx

    from bench.loadgen import Accepted, LoadGenerator, Submission

    gen = LoadGenerator(
        intake="http://intake", tracking="http://tracking", principals=make_principals(REFERENCE), seed=11
    )
    closed_at = datetime.now(UTC) - timedelta(seconds=20)
    grid = gen.planner.grids[0]

    def accepted(report_id: str, n: int, building_id: str = "") -> Accepted:
        return Accepted(
            report_id=report_id,
            hazard_id=f"00000000-0000-4000-8000-{n:012d}",
            grid_id=grid,
            category="locked_rooftop_door",
            on_site=False,
            building_id=building_id or f"{grid}-b{n + 1}",
            duplicate_of=None,
            scheduled_at=0.0,
            sent_at=0.0,
            accepted_at=0.0,
            batch=False,
        )

    gen.result.accepted.extend(accepted(f"r{n}", n) for n in range(300))
    sent: list[Submission] = []

    async def capture(submissions: list[Submission], **_: object) -> None:
        sent.extend(submissions)
        for s in submissions:  # intake accepts each relapse report as a new hazard at that building
            for r in s.reports:
                n = len(gen.result.accepted)
                gen.result.accepted.append(accepted(r.body["report_id"], n, r.building_id))

    def case(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"state": "closed", "closed": {"at": closed_at.isoformat()}})

    gen.send_reports = capture  # type: ignore[method-assign,assignment]
    async with httpx.AsyncClient(transport=httpx.MockTransport(case)) as client:
        await gen.play_relapses(client)
        first = [r for s in sent for r in s.reports]
        sent.clear()
        await gen.play_relapses(client, again=True)
    again = [r for s in sent for r in s.reports]
    assert first, "the first wave relapsed nothing"
    # Only relapses come back (each at its own building): relapse_again (0.5) of the 30 closed ones.
    assert len(first) == 30
    assert {r.building_id for r in again} <= {r.building_id for r in first}
    assert len(again) == 15
    assert all(datetime.fromisoformat(r.body["observed_at"]) > closed_at for r in again)
