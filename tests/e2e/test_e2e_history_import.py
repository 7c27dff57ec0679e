"""History import (#18 item 2) through the real services as processes, on the real database and broker.

An operator imports past records (CSV, the template's columns): bad files are refused whole or
their bad rows listed (row and field named), nothing half-imported; re-importing changes nothing;
the imported hazards reach reporting through the topic and count like live ones for their dates,
the rebuild from the topic gives the same figures; dispatch, tracking and notifications ignore them.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from cryptography.fernet import Fernet

from services.reporting.rebuild import rebuild
from shared.auth import hash_token
from shared.db import create_engine
from shared.devstack.runner import import_demo_history
from shared.events import parse_event
from shared.roles import role_url
from shared.settings import DatabaseSettings
from tests.e2e.test_e2e_hazard_life import _env
from tests.support import processes
from tests.support.kafka_tools import read_topic, wait_for
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

SERVICES = ("intake", "dispatch", "tracking", "notifications", "reporting")
TOKENS: dict[str, dict[str, Any]] = {
    "imp-operator": {"principal": "op-1", "role": "operator"},
    "imp-supervisor": {"principal": "sup-1", "role": "supervisor"},
    "imp-reporter": {"principal": "gm-liuyue-01", "role": "reporter", "grid_id": "liuyue-01"},
    "imp-fire": {"principal": "dept-fire", "role": "department", "department_id": "fire"},
}
HEADER = (
    "record_id,observed_at,category,grid_id,community_id,address,building_id,reporter_type,source,"
    "campaign_ids,notice_issued,department_id,dispatched_at,acknowledged_at,receipt_deadline,"
    "rectified_at,closed_at,relapse_of_record_id"
)
GOOD = [
    # Dispatched, acknowledged on time, notice issued, rectified and closed; relapsed by H-3.
    "H-1,2025-03-10 09:00,locked_rooftop_door,liuyue-01,liuyue,Liuyue Rd 1,B-1,grid_member,paper,,yes,fire,"
    "2025-03-10 10:00,2025-03-10 11:00,2025-03-10 12:00,2025-03-15,2025-03-16,",
    # Acknowledged three hours after its deadline.
    "H-2,2025-03-12 09:00,public_security_hazard,liuyue-02,,,,building_manager,,,no,police,"
    "2025-03-12 10:00,2025-03-12 15:00,2025-03-12 12:00,,,",
    "H-3,2025-04-20 09:00,locked_rooftop_door,liuyue-01,,Liuyue Rd 1,B-1,,,,,,,,,,,H-1",
    "H-4,2025-03-20,gas_leak,liuyue-03,,,,hotline,hotline,,,,,,,,,",
]
BAD = [
    "X-1,2025-02-30,gas_leak,liuyue-01,,,,,,,,,,,,,,",
    "X-2,2025-03-01,no_such_thing,liuyue-01,,,,,,,,,,,,,,",
    "X-3,2025-03-01,gas_leak,atlantis-01,,,,,,,,,,,,,,",
    "D-1,2025-03-01,gas_leak,liuyue-01,,,,,,,,,,,,,,",
    "D-1,2025-03-02,gas_leak,liuyue-01,,,,,,,,,,,,,,",
]
# Rows of the bad file (header = row 1): the good ones 2-5, then X-1 .. D-1 at 6-10.
BAD_ROWS = {(6, "observed_at"), (7, "category"), (8, "grid_id"), (9, "record_id"), (10, "record_id")}
PERIOD = {"from": "2025-03-01", "to": "2025-04-30"}
FIGURES = (
    "reported",
    "dispatched",
    "acknowledged",
    "acknowledged_late",
    "notices_issued",
    "rectified",
    "closed",
    "relapsed",
)


def _csv(lines: list[str]) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def system(db_url: str, kafka: Any, topics: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The five services as processes, each as its own database role."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"token_sha256": hash_token(t), **p} for t, p in TOKENS.items()]))

    def env_for(service: str, port: int) -> dict[str, str]:
        env = _env(service, role_url(db_url, service), kafka.bootstrap_servers, topics, port, tokens)
        if service == "reporting":
            env["REPORTING__PROJECTION__ROLLUP_REFRESH_S"] = "0.5"
            env["REPORTING__PROJECTION__MAX_STALENESS_S"] = "0"
        if service == "notifications":
            env["NOTIFICATIONS__SECRET_KEY"] = Fernet.generate_key().decode()
        return env

    with processes.running_services(SERVICES, env_for, tmp_path) as urls:
        yield urls


async def _count(db_url: str, table: str) -> int:
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text(f"select count(*) from {table}"))).scalar_one())
    finally:
        await engine.dispose()


async def _post(
    client: httpx.AsyncClient,
    url: str,
    data: bytes,
    *,
    on_error: str | None = None,
    token: str = "imp-operator",
) -> httpx.Response:
    form = {} if on_error is None else {"on_error": on_error}
    return await client.post(
        f"{url}/api/v1/imports",
        files={"file": ("history.csv", data, "text/csv")},
        data=form,
        headers=_auth(token),
    )


async def _summary(client: httpx.AsyncClient, url: str, group_by: str) -> dict[str, Any]:
    response = await client.get(
        f"{url}/api/v1/reports/summary",
        params={**PERIOD, "group_by": group_by},
        headers=_auth("imp-supervisor"),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body.pop("as_of", None)
    return body


async def test_history_import_refuses_or_skips_bad_rows_counts_in_reporting_and_is_never_dispatched(
    system: dict[str, str], db_url: str, kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    intake, reporting = system["intake"], system["reporting"]
    async with httpx.AsyncClient(timeout=60) as client:
        # Only operators import.
        assert (await _post(client, intake, _csv(GOOD), token="imp-reporter")).status_code == 403
        assert (await _post(client, intake, _csv(GOOD), token="imp-supervisor")).status_code == 403
        assert (
            await client.post(f"{intake}/api/v1/imports", files={"file": ("h.csv", b"x")})
        ).status_code == 401

        # Wrong columns: the whole file refused, each column named.
        wrong = await _post(
            client, intake, b"record,observed_at,category\nH-1,2025-03-10,gas_leak\n", on_error="skip"
        )
        assert wrong.status_code == 422
        assert wrong.json()["error"]["code"] == "wrong_columns"
        assert {d["field"] for d in wrong.json()["error"]["details"]} == {"record", "record_id", "grid_id"}

        # Bad rows, refuse mode (the default): nothing stored.
        refused = await _post(client, intake, _csv(GOOD + BAD))
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "import_refused"
        assert {(d["row"], d["field"]) for d in error["details"]} == BAD_ROWS
        assert error["import"]["imported"] == 0
        assert await _count(db_url, "intake.imported_hazards") == 0
        assert await _count(db_url, "intake.outbox") == 0

        # Bad rows, skip mode: listed, the good ones imported (one transaction).
        skipped = await _post(client, intake, _csv(GOOD + BAD), on_error="skip")
        assert skipped.status_code == 200, skipped.text
        body = skipped.json()
        assert (body["rows"], body["imported"], body["unchanged"], body["rejected"]) == (9, 4, 0, 5)
        assert {(e["row"], e["field"]) for e in body["errors"]} == BAD_ROWS

        # Re-importing changes nothing (the clean file, and the bad one again).
        again = await _post(client, intake, _csv(GOOD))
        assert again.status_code == 200, again.text
        assert (again.json()["imported"], again.json()["unchanged"]) == (0, 4)
        again_bad = await _post(client, intake, _csv(GOOD + BAD), on_error="skip")
        assert (again_bad.json()["imported"], again_bad.json()["unchanged"]) == (0, 4)
        # The same record id with other content is a bad row, not a rewrite.
        changed = await _post(client, intake, _csv([GOOD[0].replace("Liuyue Rd 1", "Liuyue Rd 2")]))
        assert changed.status_code == 422
        assert [(d["row"], d["field"]) for d in changed.json()["error"]["details"]] == [(2, "record_id")]
        assert await _count(db_url, "intake.imported_hazards") == 4
        # A cell text cannot hold (NUL) is a bad row too, nothing stored.
        nul = await _post(client, intake, _csv(["N-1,2025-03-01,gas_leak,liuyue-01,,Road\x001,,,,,,,,,,,,"]))
        assert nul.status_code == 422
        assert [(d["row"], d["field"]) for d in nul.json()["error"]["details"]] == [(2, "address")]

        # The command does the same (as intake's database role): the file again changes nothing.
        path = tmp_path / "history.csv"
        path.write_bytes(_csv(GOOD))
        env = _env(
            "intake", role_url(db_url, "intake"), kafka.bootstrap_servers, topics, 0, tmp_path / "tokens.yaml"
        )
        command = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.intake.import_history",
            str(path),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(command.communicate(), timeout=120)
        assert command.returncode == 0, err.decode()[-2000:]
        assert '"unchanged": 4' in out.decode()
        assert await _count(db_url, "intake.imported_hazards") == 4

        # The four events reach the topic, and only they: nothing dispatched, tracked or notified.
        records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=4, timeout_s=30)
        events = [parse_event(r.value) for r in records]
        assert sorted(e.payload.record_id for e in events if e.event_type == "hazard.imported") == [  # type: ignore[union-attr]
            "H-1",
            "H-2",
            "H-3",
            "H-4",
        ]
        assert len(events) == 4

        async def reporting_applied() -> bool:
            return await _count(db_url, "reporting.hazards") == 4

        await wait_for(reporting_applied, timeout_s=60, interval_s=0.3)
        # Every consumer has had its chance: intake's own consumer, dispatch, tracking, notifications.
        await asyncio.sleep(3)
        for table in (
            "dispatch.hazards",
            "dispatch.dispatches",
            "dispatch.timers",
            "tracking.cases",
            "notifications.deliveries",
            "notifications.reminders",
        ):
            assert await _count(db_url, table) == 0, table
        records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=5, timeout_s=3)
        assert len(records) == 4
        assert await _count(db_url, f"{'intake'}.reports") == 0

        live = {by: await _summary(client, reporting, by) for by in ("category", "department", "community")}
        assert {f: live["category"]["totals"][f] for f in FIGURES} == {
            "reported": 4,
            "dispatched": 2,
            "acknowledged": 2,
            "acknowledged_late": 1,
            "notices_issued": 1,
            "rectified": 1,
            "closed": 1,
            "relapsed": 1,
        }
        by_category = {g["key"]: {f: g[f] for f in FIGURES} for g in live["category"]["groups"]}
        assert by_category["locked_rooftop_door"] == {
            "reported": 2,
            "dispatched": 1,
            "acknowledged": 1,
            "acknowledged_late": 0,
            "notices_issued": 1,
            "rectified": 1,
            "closed": 1,
            "relapsed": 1,
        }
        assert by_category["public_security_hazard"]["acknowledged_late"] == 1
        assert by_category["gas_leak"]["reported"] == 1

        # A year later, the imported months are the year-on-year comparison.
        year_on = await client.get(
            f"{reporting}/api/v1/reports/summary",
            params={"from": "2026-03-01", "to": "2026-04-30", "group_by": "category"},
            headers=_auth("imp-supervisor"),
        )
        assert year_on.status_code == 200, year_on.text
        earlier = year_on.json()["totals"]["year_earlier"]
        assert (earlier["from"], earlier["reported"], earlier["dispatched"], earlier["closed"]) == (
            "2025-03-01",
            4,
            2,
            1,
        )

        # The same figures from a rebuild of the projection from the topic.
        await rebuild(
            database_url=db_url,
            bootstrap_servers=kafka.bootstrap_servers,
            topic=topics["lifecycle"],
            timezone="Asia/Shanghai",
            batch_size=3,
            workers=1,
        )
        rebuilt = {by: await _summary(client, reporting, by) for by in live}
        assert rebuilt == live

    # make run's demo history (a year of generated records) goes through the same route.
    demo = await asyncio.to_thread(
        import_demo_history, intake_url=intake, operator_token="imp-operator", records=300
    )
    assert demo == 300
    assert uuid.UUID(body["import_id"])
