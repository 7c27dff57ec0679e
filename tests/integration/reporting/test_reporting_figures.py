"""Every reporting figure against hand-computed expectations, through the live consumer; then a rebuild.

The event log (tests/unit/reporting/reporting_scenario.py) has a late acknowledgement, returns
before and after the deadline with re-routing, an operator's reassignment after the deadline,
rework, a relapse, a duplicate, an on-site fix, events out of order across producers, and
redelivered events. It goes to a real topic; the reporting app consumes it into PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.reporting.rebuild import rebuild
from shared.db import create_engine
from shared.events import dump_event
from shared.progress import Progress
from shared.roles import role_url
from shared.settings import DatabaseSettings
from tests.integration.reporting.reporting_helpers import auth, running_app, settings_for, wait_applied
from tests.support.kafka_tools import produce
from tests.unit.reporting.reporting_scenario import (
    EXPECTED,
    EXPECTED_TOTALS,
    build_log,
    expected_of,
    figures_of,
)

pytestmark = pytest.mark.integration

APRIL = {"from": "2026-04-01", "to": "2026-04-30"}
# Groups whose hazards are exactly those of another expectation in this log.
SAME_AS = {
    ("category", "locked_rooftop_door"): ("community", "liuyue"),
    ("category", "ebike_indoor_charging"): ("community", "huale"),
    ("category", "sporadic_construction_works"): ("community", "silian"),
    ("grid", "liuyue-01"): ("campaign", "rooftop-escape-routes-2026"),
    ("grid", "silian-01"): ("community", "silian"),
}


async def _summary(client: httpx.AsyncClient, group_by: str, **params: str) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/reports/summary", params={**APRIL, "group_by": group_by, **params}, headers=auth()
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _everything(client: httpx.AsyncClient) -> dict[str, Any]:
    """Every report the service gives for April, with the moment of asking removed."""
    out: dict[str, Any] = {}
    for group_by in ("department", "community", "grid", "category", "campaign"):
        body = await _summary(client, group_by)
        body.pop("as_of")
        out[f"summary-{group_by}"] = body
    overdue = (await client.get("/api/v1/reports/overdue", headers=auth())).json()
    out["overdue"] = [{k: v for k, v in item.items() if k != "minutes_overdue"} for item in overdue["items"]]
    out["hotspots"] = (
        await client.get(
            "/api/v1/reports/relapse-hotspots", params={**APRIL, "min_relapses": 1}, headers=auth()
        )
    ).json()
    out["campaigns"] = (await client.get("/api/v1/reports/campaigns", headers=auth())).json()
    out["timeseries"] = (
        await client.get("/api/v1/reports/timeseries", params={**APRIL, "bucket": "week"}, headers=auth())
    ).json()
    return out


async def _table_oids(db_url: str) -> dict[str, int]:
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT c.relname, c.oid::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'reporting' AND c.relname IN ('hazards', 'dispatches', 'rollup')"
                )
            )
            return {r[0]: r[1] for r in rows}
    finally:
        await engine.dispose()


async def test_figures_match_hand_computed_expectations_and_rebuild_gives_the_same(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    log = build_log()
    values = [(str(e.hazard_id).encode(), dump_event(e)) for e in log]
    # Redelivered events (same event ids) later in the topic, one of them twice.
    redelivered = [values[2], values[5], values[13], values[2]]
    # Records that are no valid event: the live consumer dead-letters them, the rebuild skips them.
    invalid = [
        (b"x", b"not json"),
        (values[0][0], dump_event(log[0])[:-1] + b', "extra": 1}'),  # a field the contract forbids
    ]
    records: list[tuple[bytes | None, bytes]] = [*values[:9], *invalid, *values[9:], *redelivered]
    await produce(kafka.bootstrap_servers, topics["lifecycle"], records)
    # The service runs as its own least-privileged role (shared.roles); the rebuild, which swaps tables,
    # runs as the schemas' owner and gives that role the new tables.
    settings = settings_for(role_url(db_url, "reporting"), kafka.bootstrap_servers, topics)

    async with running_app(settings) as (_app, client):
        await wait_applied(db_url, len(log))

        for group_by, groups in EXPECTED.items():
            body = await _summary(client, group_by)
            got = {g["key"]: figures_of(g) for g in body["groups"]}
            assert set(got) == set(groups), group_by
            for key, entry in groups.items():
                assert got[key] == expected_of(entry), (group_by, key)
            assert figures_of({**body["totals"]}) == expected_of(EXPECTED_TOTALS)
        for (group_by, key), (same_group, same_key) in SAME_AS.items():
            body = await _summary(client, group_by)
            row = next(g for g in body["groups"] if g["key"] == key)
            assert figures_of(row) == expected_of(EXPECTED[same_group][same_key]), (group_by, key)

        body = await _summary(client, "department")
        assert body["previous_period"] == {"from": "2026-03-02", "to": "2026-03-31"}
        assert body["year_earlier"] == {"from": "2025-04-01", "to": "2025-04-30"}
        fire = next(g for g in body["groups"] if g["key"] == "fire")
        assert fire["label"]["zh"] == "消防监督（消安委办公室）"

        # Filters narrow every figure: only liuyue's hazards, grouped by department.
        liuyue = await _summary(client, "department", community="liuyue")
        assert {g["key"]: g["reported"] for g in liuyue["groups"]} == {"": 1, "fire": 2}
        assert liuyue["totals"]["dispatched"] == 2
        assert liuyue["totals"]["overdue_receipt_rate"] == 0.5

        # CSV: the same table.
        response = await client.get(
            "/api/v1/reports/summary",
            params={**APRIL, "group_by": "department", "format": "csv"},
            headers=auth(),
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["key"] for r in rows] == [g["key"] for g in body["groups"]]
        fire_csv = next(r for r in rows if r["key"] == "fire")
        assert fire_csv["overdue_receipt_rate"] == "0.5"
        assert fire_csv["dispatched"] == "4"
        assert fire_csv["year_earlier_overdue_receipt_rate"] == "1.0"
        assert fire_csv["label_zh"] == fire["label"]["zh"]

        # Open overdue: only D5 (H3, fire); D8's deadline is far ahead.
        overdue = (await client.get("/api/v1/reports/overdue", headers=auth())).json()
        assert [(i["dispatch_id"], i["department_id"]) for i in overdue["items"]] == [
            (str(uuid.UUID(int=0x2005)), "fire")
        ]

        # Hotspots: one relapse at liuyue-01/B-1; the default threshold (2) lists none.
        hot = (
            await client.get(
                "/api/v1/reports/relapse-hotspots", params={**APRIL, "min_relapses": 1}, headers=auth()
            )
        ).json()
        assert [(i["place_key"], i["relapses"], i["community_id"]) for i in hot["items"]] == [
            ("liuyue-01/B-1", 1, "liuyue")
        ]
        hot2 = (await client.get("/api/v1/reports/relapse-hotspots", params=APRIL, headers=auth())).json()
        assert hot2["items"] == []
        assert hot2["min_relapses"] == 2

        # Campaigns: progress against targets.
        campaigns = {
            c["campaign_id"]: c
            for c in (await client.get("/api/v1/reports/campaigns", headers=auth())).json()["campaigns"]
        }
        spring = campaigns["spring-fire-2026"]
        assert (spring["found"], spring["notices_issued"], spring["rectified"], spring["closed"]) == (
            5,
            2,
            3,
            3,
        )
        assert spring["progress"]["found"] == round(5 / 4687, 4)
        works = campaigns["sporadic-works-2026"]
        assert (works["found"], works["notices_issued"]) == (1, 0)
        assert works["progress"] == {"found": round(1 / 302, 4), "notices_issued": 0.0, "rectified": None}
        assert campaigns["electrical-fire-2026"]["found"] == 0

        # Time series: overdue receipts by department and day.
        series = (
            await client.get(
                "/api/v1/reports/timeseries", params={**APRIL, "metric": "overdue_receipts"}, headers=auth()
            )
        ).json()
        by_key = {s["key"]: dict(zip(series["buckets"], s["values"], strict=True)) for s in series["series"]}
        assert {k: {d: v for d, v in days.items() if v} for k, days in by_key.items()} == {
            "fire": {"2026-04-01": 1, "2026-04-08": 1},
            "police": {"2026-04-05": 1},
            "safety_supervision": {"2026-04-10": 1},
            "urban_management": {},
            "": {},
        }

        # Prometheus gauges with bounded labels (departments and communities of the reference data).
        metrics_text = (await client.get("/metrics")).text
        assert 'hazard_report_open_overdue_dispatches{department="fire"}' in metrics_text

        live = await _everything(client)
        oids_before = await _table_oids(db_url)

        result = await rebuild(
            database_url=db_url,
            bootstrap_servers=kafka.bootstrap_servers,
            topic=topics["lifecycle"],
            timezone="Asia/Shanghai",
            batch_size=7,
            workers=2,
            progress=(
                progress := Progress("reporting rebuild", unit="events", stream=io.StringIO(), tty=False)
            ),
        )
        assert result.events == len(values) + len(redelivered)
        # Not a terminal: a line per phase and a last one with every event replayed.
        said = progress.stream.getvalue().splitlines()  # type: ignore[attr-defined]
        assert any(line.endswith("replaying the topic in 2 processes") for line in said), said
        assert f"reporting rebuild: {result.events} events" in said[-1]
        assert said[-1].endswith("done")
        assert result.invalid == len(invalid)
        rebuilt = await _everything(client)
        assert await _table_oids(db_url) != oids_before  # new tables were swapped in
        assert rebuilt == live

        # In one process, one event per batch: every dispatch gets its hazard's place from the
        # set-based fill after the replay, none from its own batch.
        again = await rebuild(
            database_url=db_url,
            bootstrap_servers=kafka.bootstrap_servers,
            topic=topics["lifecycle"],
            timezone="Asia/Shanghai",
            batch_size=1,
            workers=1,
        )
        assert (again.events, again.invalid) == (result.events, result.invalid)
        assert await _everything(client) == live

        # The live consumer keeps projecting into the swapped-in tables.
        extra = build_log()[-1]  # H11's report again under a new event id: idempotent by hazard id
        late = extra.model_copy(update={"event_id": uuid.uuid4()})
        await produce(kafka.bootstrap_servers, topics["lifecycle"], [(b"x", dump_event(late))])
        await wait_applied(db_url, len(log) + 1)
        assert await _everything(client) == live


async def test_validation_and_access(db_url: str, kafka: Any, topics: dict[str, str]) -> None:
    async with running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_app, client):
        url = "/api/v1/reports/summary"
        assert (await client.get(url)).status_code == 401
        assert (await client.get(url, headers=auth("tok-fire"))).status_code == 403
        assert (await client.get(url, headers=auth("tok-operator"))).status_code == 200
        bad = await client.get(url, params={"from": "2026-05-01", "to": "2026-04-01"}, headers=auth())
        assert bad.status_code == 422
        assert "must not be after" in bad.json()["error"]["details"][0]["problem"]
        long = await client.get(url, params={"from": "2020-01-01", "to": "2026-04-01"}, headers=auth())
        assert long.status_code == 422
        assert "at most" in long.json()["error"]["details"][0]["problem"]
        group = await client.get(url, params={"group_by": "planet"}, headers=auth())
        assert group.status_code == 422
        assert group.json()["error"]["details"][0]["field"] == "group_by"
        assert "street" in group.json()["error"]["details"][0]["problem"]  # names what is accepted
        pair = await client.get(url, params={"group_by": "grid,source"}, headers=auth())
        assert pair.status_code == 422
        assert "campaign,category" in pair.json()["error"]["details"][0]["problem"]
        date_bad = await client.get(url, params={"from": "yesterday"}, headers=auth())
        assert date_bad.status_code == 422
        unknown = await client.get(url, params={"community": "atlantis"}, headers=auth())
        assert unknown.status_code == 422
        assert "atlantis" in unknown.json()["error"]["details"][0]["problem"]
        metric = await client.get("/api/v1/reports/timeseries", params={"metric": "nope"}, headers=auth())
        assert metric.status_code == 422
        assert metric.json()["error"]["code"] == "invalid_metric"
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "tok-" not in page.text
