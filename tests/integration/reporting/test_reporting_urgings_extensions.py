"""Urgings and extensions counted by department and community; receipt lateness against the
original and the extended deadline; the rebuild gives the same figures."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from services.reporting.rebuild import rebuild
from shared import events as ev
from shared.events import dump_event
from tests.integration.reporting.reporting_helpers import auth, running_app, settings_for, wait_applied
from tests.support.factories import FROZEN, T0, reported_payload
from tests.support.kafka_tools import produce

pytestmark = pytest.mark.integration

APRIL = {"from": "2026-04-01", "to": "2026-04-30"}
FIGURES = (
    "urgings",
    "extension_requests",
    "extensions_approved",
    "overdue_receipts",
    "overdue_receipts_original",
)


class _Log:
    def __init__(self) -> None:
        self.events: list[ev.AnyEvent] = []
        self.n = 0

    def add(self, cls: type[Any], hazard: uuid.UUID, at: datetime, payload: Any, producer: str) -> None:
        self.n += 1
        self.events.append(
            cls(
                event_id=uuid.UUID(int=0x9000 + self.n),
                occurred_at=at,
                hazard_id=hazard,
                producer=producer,
                payload=payload,
            )
        )

    def hazard(
        self, hazard: uuid.UUID, dispatch: uuid.UUID, department: str, grid: str, *, ack_after: timedelta
    ) -> datetime:
        community = grid.rsplit("-", 1)[0]
        self.add(
            ev.HazardReported,
            hazard,
            T0,
            reported_payload(report_id=uuid.uuid4(), grid_id=grid, community_id=community),
            "intake",
        )
        deadline = T0 + timedelta(hours=2)
        self.add(
            ev.HazardDispatched,
            hazard,
            T0,
            ev.HazardDispatchedPayload(
                dispatch_id=dispatch,
                department_id=department,
                rule_id="r",
                receipt_deadline=deadline,
                deadline_rule=FROZEN,
            ),
            "dispatch",
        )
        return deadline

    def acknowledged(
        self, hazard: uuid.UUID, dispatch: uuid.UUID, department: str, at: datetime, deadline: datetime
    ) -> None:
        self.add(
            ev.HazardAcknowledged,
            hazard,
            at,
            ev.HazardAcknowledgedPayload(
                dispatch_id=dispatch,
                department_id=department,
                acknowledged_at=at,
                receipt_deadline=deadline,
                on_time=at <= deadline,
                acknowledged_by=f"dept-{department}",
            ),
            "dispatch",
        )

    def extension(
        self,
        hazard: uuid.UUID,
        department: str,
        *,
        stage: str,
        original: datetime,
        wanted: datetime,
        approved: bool,
        dispatch: uuid.UUID | None,
        at: datetime,
    ) -> None:
        producer = "dispatch" if stage == "receipt" else "tracking"
        common: dict[str, Any] = {
            "stage": stage,
            "dispatch_id": dispatch,
            "department_id": department,
            "original_deadline": original,
            "requested_deadline": wanted,
        }
        self.add(
            ev.HazardExtensionRequested,
            hazard,
            at,
            ev.HazardExtensionRequestedPayload(**common, current_deadline=original, reason="busy", by="d"),
            producer,
        )
        self.add(
            ev.HazardExtensionDecided,
            hazard,
            at + timedelta(minutes=5),
            ev.HazardExtensionDecidedPayload(
                **common, approved=approved, deadline=wanted if approved else original, by="op-1"
            ),
            producer,
        )

    def urged(self, hazard: uuid.UUID, department: str, stage: str, at: datetime) -> None:
        self.add(
            ev.HazardUrged,
            hazard,
            at,
            ev.HazardUrgedPayload(
                urging_id=uuid.uuid4(),
                department_id=department,
                stage=stage,
                note="快",
                urged_by="sup-1",  # type: ignore[arg-type]
            ),
            "tracking",
        )


def build_log() -> list[ev.AnyEvent]:
    """H1 (fire, liuyue): receipt extended by a day, acknowledged 5 h in: late only against the original;
    urged twice. H2 (police, silian): extension refused, acknowledged 3 h in: late both ways.
    H3 (fire, liuyue): acknowledged in time, its rectification deadline extended."""
    log = _Log()
    h1, h2, h3 = (uuid.UUID(int=0x8001 + i) for i in range(3))
    d1, d2, d3 = (uuid.UUID(int=0x8101 + i) for i in range(3))
    deadline1 = log.hazard(h1, d1, "fire", "liuyue-01", ack_after=timedelta(hours=5))
    extended = deadline1 + timedelta(days=1)
    log.urged(h1, "fire", "receipt", T0 + timedelta(minutes=30))
    log.extension(
        h1,
        "fire",
        stage="receipt",
        original=deadline1,
        wanted=extended,
        approved=True,
        dispatch=d1,
        at=T0 + timedelta(hours=1),
    )
    log.acknowledged(h1, d1, "fire", T0 + timedelta(hours=5), extended)
    log.urged(h1, "fire", "rectification", T0 + timedelta(hours=6))
    deadline2 = log.hazard(h2, d2, "police", "silian-01", ack_after=timedelta(hours=3))
    log.extension(
        h2,
        "police",
        stage="receipt",
        original=deadline2,
        wanted=deadline2 + timedelta(hours=4),
        approved=False,
        dispatch=d2,
        at=T0 + timedelta(hours=1),
    )
    log.acknowledged(h2, d2, "police", T0 + timedelta(hours=3), deadline2)
    deadline3 = log.hazard(h3, d3, "fire", "liuyue-01", ack_after=timedelta(hours=1))
    log.acknowledged(h3, d3, "fire", T0 + timedelta(hours=1), deadline3)
    rect = T0 + timedelta(days=3)
    log.extension(
        h3,
        "fire",
        stage="rectification",
        original=rect,
        wanted=rect + timedelta(days=2),
        approved=True,
        dispatch=None,
        at=T0 + timedelta(days=1),
    )
    return log.events


EXPECTED = {
    "department": {
        "fire": {
            "urgings": 2,
            "extension_requests": 2,
            "extensions_approved": 2,
            "overdue_receipts": 0,
            "overdue_receipts_original": 1,
        },
        "police": {
            "urgings": 0,
            "extension_requests": 1,
            "extensions_approved": 0,
            "overdue_receipts": 1,
            "overdue_receipts_original": 1,
        },
    },
    "community": {
        "liuyue": {
            "urgings": 2,
            "extension_requests": 2,
            "extensions_approved": 2,
            "overdue_receipts": 0,
            "overdue_receipts_original": 1,
        },
        "silian": {
            "urgings": 0,
            "extension_requests": 1,
            "extensions_approved": 0,
            "overdue_receipts": 1,
            "overdue_receipts_original": 1,
        },
    },
}
TOTALS = {
    "urgings": 2,
    "extension_requests": 3,
    "extensions_approved": 2,
    "overdue_receipts": 1,
    "overdue_receipts_original": 2,
}


async def _summary(client: httpx.AsyncClient, group_by: str) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/reports/summary", params={**APRIL, "group_by": group_by}, headers=auth()
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body.pop("as_of")
    return body


async def _csv(client: httpx.AsyncClient) -> list[dict[str, str]]:
    response = await client.get(
        "/api/v1/reports/summary", params={**APRIL, "group_by": "department", "format": "csv"}, headers=auth()
    )
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_urgings_and_extensions_are_counted_live_and_the_rebuild_agrees(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    log = build_log()
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in log],
    )
    async with running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_app, client):
        await wait_applied(db_url, len(log))
        live = {
            by: await _summary(client, by)
            for by in ("department", "community", "category", "grid", "campaign")
        }
        for by, expected in EXPECTED.items():
            got = {g["key"]: {f: g[f] for f in FIGURES} for g in live[by]["groups"]}
            assert got == expected, by
            assert {f: live[by]["totals"][f] for f in FIGURES} == TOTALS, by
        fire = next(g for g in live["department"]["groups"] if g["key"] == "fire")
        assert (fire["dispatched"], fire["acknowledged"], fire["acknowledged_late"]) == (2, 2, 0)

        rows = await _csv(client)
        header = list(rows[0])
        # Appended after returned_after_receipt, before the notice and escalation columns (#18).
        after = header[header.index("returned_after_receipt") :]
        assert after[:5] == ["returned_after_receipt", *FIGURES[:3], "overdue_receipts_original"]
        assert {r["key"]: r["overdue_receipts_original"] for r in rows} == {"fire": "1", "police": "1"}
        assert {r["key"]: r["urgings"] for r in rows} == {"fire": "2", "police": "0"}

        await rebuild(
            database_url=db_url,
            bootstrap_servers=kafka.bootstrap_servers,
            topic=topics["lifecycle"],
            timezone="Asia/Shanghai",
            batch_size=3,
            workers=1,
        )
        rebuilt = {by: await _summary(client, by) for by in live}
        assert rebuilt == live
        assert await _csv(client) == rows
