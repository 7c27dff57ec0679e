"""The projection of extensions and urgings: the deadline in force and the original merge in any order."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

from services.reporting import domain
from shared import events as ev
from tests.support.factories import make_event

TZ = ZoneInfo("Asia/Shanghai")


def test_receipt_extension_moves_the_deadline_and_keeps_the_original_whatever_the_order() -> None:
    hazard = uuid.uuid4()
    dispatched = make_event("hazard.dispatched", hazard_id=hazard)
    assert isinstance(dispatched, ev.HazardDispatched)
    original = dispatched.payload.receipt_deadline
    extended = original + timedelta(days=1)
    decided = make_event(
        "hazard.extension_decided", hazard_id=hazard, deadline=extended, requested_deadline=extended
    )
    acknowledged = make_event("hazard.acknowledged", hazard_id=hazard, receipt_deadline=extended)
    urged = make_event("hazard.urged", hazard_id=hazard)
    requested = make_event("hazard.extension_requested", hazard_id=hazard)
    results = []
    for order in itertools.permutations([dispatched, decided, acknowledged, urged, requested]):
        batch = domain.project_events(order, tz=TZ)
        (row,) = batch.dispatches.values()
        results.append(
            (row["deadline"], row["original_deadline"], sorted(r["kind"] for r in batch.actions.values()))
        )
        # Merged row by row (as the stored rows are), the same again.
        merged: dict[str, object] = {}
        for event in order:
            (part,) = domain.project_events([event], tz=TZ).dispatches.values() or [{}]
            merged = domain.merge_rows(merged, part, rules=domain.DISPATCH_RULES) if part else merged
        assert (merged["deadline"], merged["original_deadline"]) == (extended, original)
    assert set(map(repr, results)) == {
        repr((extended, original, ["extension_approved", "extension_requested", "urged"]))
    }


def test_a_refused_or_rectification_extension_leaves_the_receipt_deadline() -> None:
    hazard = uuid.uuid4()
    dispatched = make_event("hazard.dispatched", hazard_id=hazard)
    assert isinstance(dispatched, ev.HazardDispatched)
    original = dispatched.payload.receipt_deadline
    refused = make_event("hazard.extension_decided", hazard_id=hazard, approved=False, deadline=original)
    rectification = make_event(
        "hazard.extension_decided",
        hazard_id=hazard,
        stage="rectification",
        dispatch_id=None,
        deadline=original + timedelta(days=9),
    )
    batch = domain.project_events([dispatched, refused, rectification], tz=TZ)
    (row,) = batch.dispatches.values()
    assert (row["deadline"], row["original_deadline"]) == (original, original)
    assert sorted(r["kind"] for r in batch.actions.values()) == ["extension_approved", "extension_refused"]
    assert {r["stage"] for r in batch.actions.values()} == {"receipt", "rectification"}
