"""A relapse reported moments after closure is never swallowed as a duplicate (#21, item 1).

Intake, dispatch and tracking run in-process on the real PostgreSQL and broker. Intake's
consumer is held back on purpose while the first hazard is closed, so intake still sees it
open when the relapse is reported and links the new report as its duplicate: the race that
lost relapses, made certain. Once intake's consumer learns of the closure, the link must be
undone and the report go on to dispatch as a relapse of the closed case, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from tests.integration.dispatch import dispatch_helpers
from tests.integration.intake import intake_helpers
from tests.integration.tracking import tracking_helpers
from tests.support.kafka_tools import read_topic

pytestmark = pytest.mark.integration

Client = httpx.AsyncClient


class HeldConsumer:
    """Holds a service's consumer before it applies anything, until released."""

    def __init__(self, app: FastAPI) -> None:
        consumer = app.state.runtime.consumer
        self._process: Callable[[Sequence[Any]], Awaitable[None]] = consumer.process
        self._open = asyncio.Event()
        self._open.set()
        self.held_batches = 0
        consumer.process = self._gated

    async def _gated(self, records: Sequence[Any]) -> None:
        if not self._open.is_set():
            self.held_batches += 1
        await self._open.wait()
        await self._process(records)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()


async def _until(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last})")


@contextlib.asynccontextmanager
async def _services(db_url: str, kafka: Any, topics: dict[str, str]) -> AsyncIterator[tuple[Client, ...]]:
    bootstrap = kafka.bootstrap_servers
    async with (
        intake_helpers.app_factory(db_url, bootstrap, topics)() as (intake_app, intake),
        dispatch_helpers.app_factory(db_url, kafka, topics)() as (_d, dispatch),
        tracking_helpers.app_factory(db_url, kafka, topics)() as (_t, tracking),
    ):
        intake.held = HeldConsumer(intake_app)  # type: ignore[attr-defined]
        yield intake, dispatch, tracking


async def _case(tracking: Client, hazard_id: str) -> dict[str, Any] | None:
    response = await tracking.get(
        f"/api/v1/hazards/{hazard_id}", headers=tracking_helpers.auth("tok-supervisor")
    )
    return dict(response.json()) if response.status_code == 200 else None


async def _state(tracking: Client, hazard_id: str, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        case = await _case(tracking, hazard_id)
        return case if case is not None and case["state"] == state else None

    found: dict[str, Any] = await _until(reached, f"hazard {hazard_id} in state {state}")
    return found


async def _pending_dispatch(
    dispatch: Client, hazard_id: str, *, relapse_of: str | None = None
) -> dict[str, Any]:
    """The hazard's pending dispatch; with `relapse_of`, once dispatch has annotated it as that relapse.

    Dispatch routes the unlinked report as soon as it hears of the unlinking; the relapse
    annotation comes with tracking's `hazard.relapsed`, a moment later on another path.
    """

    async def found() -> dict[str, Any] | None:
        response = await dispatch.get(
            "/api/v1/dispatches", params={"status": "pending"}, headers=dispatch_helpers.auth("tok-fire")
        )
        mine = [d for d in response.json()["items"] if d["hazard_id"] == hazard_id]
        if not mine or (relapse_of is not None and mine[0]["relapse_of"] != relapse_of):
            return None
        return mine[0]

    what = f"a pending dispatch of {hazard_id}" + (
        f" marked as a relapse of {relapse_of}" if relapse_of else ""
    )
    item: dict[str, Any] = await _until(found, what)
    return item


async def _close_through_the_apis(
    dispatch: Client, tracking: Client, hazard_id: str, held: HeldConsumer
) -> None:
    pending = await _pending_dispatch(dispatch, hazard_id)
    ack = await dispatch.post(
        f"/api/v1/dispatches/{pending['dispatch_id']}/acknowledge", headers=dispatch_helpers.auth("tok-fire")
    )
    assert ack.status_code == 200, ack.text
    await _state(tracking, hazard_id, "rectification_ordered")
    fixed = await tracking.post(
        f"/api/v1/hazards/{hazard_id}/rectification",
        json={"note": "Padlock removed", "photos": []},
        headers=tracking_helpers.auth("tok-fire"),
    )
    assert fixed.status_code == 200, fixed.text
    # From here on intake's view of the lifecycle lags: it will not hear of the closure in time.
    held.hold()
    verified = await tracking.post(
        f"/api/v1/hazards/{hazard_id}/verification",
        json={"passed": True, "note": "Door open", "photos": []},
        headers=tracking_helpers.auth("tok-gm-01"),
    )
    assert verified.status_code == 200, verified.text
    await _state(tracking, hazard_id, "closed")


async def test_a_relapse_linked_as_a_duplicate_before_intake_saw_the_closure_is_dispatched_as_a_relapse(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    building = f"RACE-{uuid.uuid4().hex[:6]}"
    where = {"building_id": building}
    async with _services(db_url, kafka, topics) as (intake, dispatch, tracking):
        held: HeldConsumer = intake.held  # type: ignore[attr-defined]
        first = await intake.post(
            "/api/v1/hazards",
            json=intake_helpers.report(location=where),
            headers=intake_helpers.auth("tok-gm1"),
        )
        assert first.status_code == 201, first.text
        original = first.json()["hazard_id"]
        await _close_through_the_apis(dispatch, tracking, original, held)
        closed_case = await _case(tracking, original)
        assert closed_case is not None
        closed_at = datetime.fromisoformat(closed_case["closed"]["at"])

        # A building manager reports the same hazard moments after the closure.
        observed = datetime.now(UTC)
        assert observed > closed_at
        second = await intake.post(
            "/api/v1/hazards",
            json=intake_helpers.report(location=where, observed_at=observed.isoformat()),
            headers=intake_helpers.auth("tok-gm1"),
        )
        assert second.status_code == 201, second.text
        relapse = second.json()["hazard_id"]
        assert second.json()["duplicate_of"] == original, "the race is certain: intake still saw it open"
        await _until(lambda: _held_something(held), "intake's consumer holding the closure back")

        unlinked_before = _unlinked_count()
        held.release()
        relapse_case = await _state(tracking, relapse, "dispatched")
        assert relapse_case["relapse_of"] == original
        assert relapse_case["duplicate_of"] is None
        pending = await _pending_dispatch(dispatch, relapse, relapse_of=original)
        assert pending["relapse_of"] == original

        response = await intake.get(f"/open311/v2/requests/{relapse}.json")
        (view,) = response.json()
        assert view["status"] == "open"
        assert view["service_notice"] is None, "no longer linked as a duplicate"
        assert not view["status_notes"].startswith("Closed")

        # Exactly once: one unlinking, one dispatch, one relapse, and the original stays closed.
        await asyncio.sleep(2)
        records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], timeout_s=5)
        kinds = Counter(
            body["event_type"]
            for body in (json.loads(r.value) for r in records)
            if body["hazard_id"] == relapse
        )
        assert kinds["hazard.duplicate_unlinked"] == 1
        assert kinds["hazard.dispatched"] == 1
        assert kinds["hazard.relapsed"] == 1
        assert kinds["hazard.closed"] == 0
        assert _unlinked_count() == unlinked_before + 1
        final_original = await _case(tracking, original)
        assert final_original is not None
        assert final_original["state"] == "closed"
        assert relapse in final_original["relapsed_as"]
        assert relapse not in final_original["duplicates"]


async def _held_something(held: HeldConsumer) -> bool:
    return held.held_batches > 0


def _unlinked_count() -> float:
    labels = {"category": "locked_rooftop_door"}
    return REGISTRY.get_sample_value("hazard_intake_duplicates_unlinked_total", labels) or 0.0
