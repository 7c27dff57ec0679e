"""Complete, realistic histories of hazards, as the services publish them, to replay in any order (#14).

A :class:`Story` builds one hazard's events with the causation links and shared instants the
producers really stamp; each scenario function tells one kind of life. Copies of a scenario differ
only in their ids and place, which :func:`labels` names by role so that copies compare equal.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from services.tracking import domain
from shared import events as ev
from shared.db import create_engine
from shared.settings import DatabaseSettings

START = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
RULE = ev.FrozenDeadlineRule(minutes=120, working_time=True)
TRACKING_TYPES = domain.TRACKING_TYPES  # what tracking publishes


class Story:
    """One hazard's history as other services publish it; ``n`` keeps copies apart (place, building)."""

    def __init__(self, n: int) -> None:
        self.hazard_id = uuid.uuid4()
        self.n = n
        # ~1 km apart, a building each: no copy is a relapse or duplicate of another.
        self.lat = round(22.50 + 0.01 * n, 5)
        self.building_id = f"B-R{n}"
        self.events: list[ev.AnyEvent] = []
        self.deadlines: dict[uuid.UUID, datetime] = {}  # receipt deadline of each dispatch

    def at(self, minute: int) -> datetime:
        return START + timedelta(minutes=minute)

    def add(
        self,
        cls: type[Any],
        payload: Any,
        *,
        minute: int,
        producer: str = "dispatch",
        causation: ev.AnyEvent | None = None,
    ) -> Any:
        event = cls(
            event_id=uuid.uuid4(),
            occurred_at=self.at(minute),
            hazard_id=self.hazard_id,
            producer=producer,
            causation_id=causation.event_id if causation is not None else None,
            payload=payload,
        )
        self.events.append(event)
        return event

    def reported(self, **overrides: Any) -> ev.HazardReported:
        data: dict[str, Any] = {
            "report_id": uuid.uuid4(),
            "category": "locked_rooftop_door",
            "description": "Rooftop door padlocked",
            "location": ev.Location(
                lat=self.lat, lon=114.16813, address="Liuyue Rd 12", building_id=self.building_id
            ),
            "grid_id": "liuyue-01",
            "community_id": "liuyue",
            "street_id": "henggang",
            "reporter_id": "gm-liuyue-01",
            "observed_at": self.at(-5),
            "accepted_at": self.at(0),
        }
        data.update(overrides)
        event: ev.HazardReported = self.add(
            ev.HazardReported, ev.HazardReportedPayload(**data), minute=0, producer="intake"
        )
        return event

    def dispatched(
        self,
        department: str,
        *,
        minute: int,
        after: ev.AnyEvent | None = None,
        previous: uuid.UUID | None = None,
    ) -> uuid.UUID:
        dispatch_id = uuid.uuid4()
        self.deadlines[dispatch_id] = self.at(minute + 120)
        self.add(
            ev.HazardDispatched,
            ev.HazardDispatchedPayload(
                dispatch_id=dispatch_id,
                department_id=department,
                rule_id="r1",
                receipt_deadline=self.deadlines[dispatch_id],
                deadline_rule=RULE,
                reason="routed" if previous is None else "rerouted",
                previous_dispatch_id=previous,
            ),
            minute=minute,
            causation=after,
        )
        return dispatch_id

    def acknowledged(
        self, dispatch_id: uuid.UUID, department: str, *, minute: int, on_time: bool = True
    ) -> None:
        self.add(
            ev.HazardAcknowledged,
            ev.HazardAcknowledgedPayload(
                dispatch_id=dispatch_id,
                department_id=department,
                acknowledged_at=self.at(minute),
                receipt_deadline=self.deadlines[dispatch_id],  # dispatch's, as it acknowledges
                on_time=on_time,
                acknowledged_by=f"officer-{department}",
            ),
            minute=minute,
        )

    def returned(
        self, dispatch_id: uuid.UUID, department: str, *, minute: int, after_receipt: bool = False
    ) -> Any:
        return self.add(
            ev.HazardReturned,
            ev.HazardReturnedPayload(
                dispatch_id=dispatch_id,
                department_id=department,
                reason="not ours",
                returned_by=f"officer-{department}",
                after_receipt=after_receipt,
                acknowledged_at=self.at(minute - 1) if after_receipt else None,
            ),
            minute=minute,
        )

    def late(self, dispatch_id: uuid.UUID, department: str, *, minute: int, levels: int) -> None:
        deadline = self.at(minute)
        self.add(
            ev.HazardReceiptOverdue,
            ev.HazardReceiptOverduePayload(
                dispatch_id=dispatch_id, department_id=department, receipt_deadline=deadline
            ),
            minute=minute,
        )
        for level in range(1, levels + 1):
            self.add(
                ev.HazardEscalated,
                ev.HazardEscalatedPayload(
                    dispatch_id=dispatch_id,
                    department_id=department,
                    level=level,
                    target="supervisor" if level > 1 else "department_head",
                    receipt_deadline=deadline,
                ),
                minute=minute + 30 * level,
            )

    def extended(self, dispatch_id: uuid.UUID, department: str, *, minute: int, by_minutes: int) -> None:
        """The department asks for a later receipt deadline and an operator approves it (延期申请)."""
        original = self.deadlines[dispatch_id]
        wanted = original + timedelta(minutes=by_minutes)
        common: dict[str, Any] = {
            "stage": "receipt",
            "dispatch_id": dispatch_id,
            "department_id": department,
            "original_deadline": original,
            "requested_deadline": wanted,
        }
        request = self.add(
            ev.HazardExtensionRequested,
            ev.HazardExtensionRequestedPayload(
                **common, current_deadline=original, reason="crew away", by=f"officer-{department}"
            ),
            minute=minute,
        )
        self.add(
            ev.HazardExtensionDecided,
            ev.HazardExtensionDecidedPayload(**common, approved=True, deadline=wanted, by="op-1"),
            minute=minute + 1,
            causation=request,
        )
        self.deadlines[dispatch_id] = wanted

    def notified(
        self, about: ev.AnyEvent, department: str, *, minute: int, result: str = "delivered"
    ) -> None:
        """The notifications service's record of telling ``department`` about an event (#16)."""
        self.add(
            ev.HazardNotified,
            ev.HazardNotifiedPayload(
                source_id=about.event_id,
                trigger="dispatched",
                department_id=department,
                audience_scope="department",
                audience_id=department,
                subscription_id=uuid.uuid4(),
                channel="webhook",
                recipient=f"hooks.{department}.example.org",
                result=result,
                attempts=1,
            ),
            minute=minute,
            producer="notifications",
            causation=about,
        )

    def tracked(self, cls: type[Any], payload: Any, *, minute: int, after: ev.AnyEvent | None = None) -> Any:
        """An event tracking publishes (for consumers other than tracking)."""
        return self.add(cls, payload, minute=minute, producer="tracking", causation=after)

    def rectification(self, department: str, *, minute: int, rounds: int) -> None:
        """Ordered, rectified and verified ``rounds`` times (all but the last fail), then closed."""
        for round_ in range(1, rounds + 1):
            at = minute + 100 * (round_ - 1)
            order = self.tracked(
                ev.HazardRectificationOrdered,
                ev.HazardRectificationOrderedPayload(
                    department_id=department, deadline=self.at(at + 30), deadline_rule=RULE, round=round_
                ),
                minute=at,
            )
            if round_ == 1:
                self.tracked(
                    ev.HazardRectificationOverdue,
                    ev.HazardRectificationOverduePayload(
                        department_id=department, deadline=self.at(at + 30), round=round_
                    ),
                    minute=at + 30,
                    after=order,
                )
            self.tracked(
                ev.HazardRectified,
                ev.HazardRectifiedPayload(
                    department_id=department, rectified_by=f"officer-{department}", round=round_
                ),
                minute=at + 40,
            )
            passed = round_ == rounds
            verified = self.tracked(
                ev.HazardVerified,
                ev.HazardVerifiedPayload(passed=passed, verified_by="gm-liuyue-01", round=round_),
                minute=at + 50,
            )
        self.tracked(
            ev.HazardClosed,
            ev.HazardClosedPayload(reason="verified", department_id=department, closed_by="gm-liuyue-01"),
            minute=minute + 100 * (rounds - 1) + 50,
            after=verified,
        )


def rerouted_then_late(s: Story) -> None:
    """Gas is late, escalated and returns it; dispatch reroutes to fire at that instant; fire acknowledges late."""
    s.reported()
    gas = s.dispatched("gas", minute=1)
    s.notified(s.events[-1], "gas", minute=2)
    s.late(gas, "gas", minute=121, levels=1)
    back = s.returned(gas, "gas", minute=160)
    fire = s.dispatched("fire", minute=160, after=back, previous=gas)
    s.acknowledged(fire, "fire", minute=300, on_time=False)


def returned_by_everyone(s: Story) -> None:
    """Fire returns it; no department is left: referred to operators at that instant."""
    s.reported()
    fire = s.dispatched("fire", minute=1)
    back = s.returned(fire, "fire", minute=20)
    s.add(
        ev.HazardReferredToOperators,
        ev.HazardReferredToOperatorsPayload(
            reason="all_candidates_returned", excluded_departments=("fire",), previous_dispatch_id=fire
        ),
        minute=20,
        causation=back,
    )


def returned_after_receipt(s: Story) -> None:
    """Fire acknowledges, then returns it (退单 after 签收); rerouted to police, who acknowledges."""
    s.reported()
    fire = s.dispatched("fire", minute=1)
    s.acknowledged(fire, "fire", minute=10)
    back = s.returned(fire, "fire", minute=40, after_receipt=True)
    police = s.dispatched("police", minute=40, after=back, previous=fire)
    s.extended(police, "police", minute=45, by_minutes=60)
    s.acknowledged(police, "police", minute=50)


def escalated_twice(s: Story) -> None:
    """Fire misses the receipt deadline, two escalation levels, then acknowledges late."""
    s.reported()
    fire = s.dispatched("fire", minute=1)
    s.late(fire, "fire", minute=121, levels=2)
    s.acknowledged(fire, "fire", minute=200, on_time=False)


def duplicate_then_unlinked(s: Story) -> None:
    """A duplicate of an open original, unlinked once the original is known closed; then dispatched."""
    original = duplicate(s)
    unlinked = s.add(
        ev.HazardDuplicateUnlinked,
        ev.HazardDuplicateUnlinkedPayload(
            original_hazard_id=original,
            original_closed_at=s.at(-60),
            observed_at=s.at(-5),
            category="locked_rooftop_door",
            community_id="liuyue",
            grid_id="liuyue-01",
        ),
        minute=3,
        producer="intake",
    )
    fire = s.dispatched("fire", minute=3, after=unlinked)
    s.acknowledged(fire, "fire", minute=9)


def duplicate(s: Story) -> uuid.UUID:
    """A duplicate of an open original (returned), linked to it."""
    original = uuid.uuid4()
    s.reported(duplicate_of=original)
    s.add(
        ev.HazardDuplicateLinked,
        ev.HazardDuplicateLinkedPayload(original_hazard_id=original, distance_m=3.0, same_building=True),
        minute=0,
        producer="intake",
    )
    return original


def no_rule(s: Story) -> None:
    report = s.reported()
    s.add(
        ev.HazardReferredToOperators,
        ev.HazardReferredToOperatorsPayload(reason="no_rule"),
        minute=0,
        causation=report,
    )


def on_site(s: Story) -> None:
    s.reported(rectified_on_site=True)


# Where each history leaves the case, in publish order.
SCENARIOS_END = {
    "rerouted_then_late": ("rectification_ordered", "fire"),
    "returned_by_everyone": ("referred_to_operators", None),
    "returned_after_receipt": ("rectification_ordered", "police"),
    "escalated_twice": ("rectification_ordered", "fire"),
    "duplicate_then_unlinked": ("rectification_ordered", "fire"),
    "duplicate": ("duplicate", None),
    "no_rule": ("referred_to_operators", None),
    "on_site": ("closed", None),
}


def whole_life(s: Story) -> None:
    """Rerouted, late, acknowledged; rectification overdue, rework once (urged, a progress note, its
    deadline extended), verified and closed (every type)."""
    rerouted_then_late(s)
    s.rectification("fire", minute=300, rounds=2)
    s.tracked(
        ev.HazardUrged,
        ev.HazardUrgedPayload(
            urging_id=uuid.uuid4(), department_id="fire", stage="rectification", note="快", urged_by="sup-1"
        ),
        minute=405,
    )
    s.tracked(
        ev.HazardProgressNoted,
        ev.HazardProgressNotedPayload(department_id="fire", note="parts ordered", noted_by="officer-fire"),
        minute=406,
    )
    common: dict[str, Any] = {
        "stage": "rectification",
        "department_id": "fire",
        "original_deadline": s.at(430),
        "requested_deadline": s.at(500),
        "round": 2,
    }
    request = s.tracked(
        ev.HazardExtensionRequested,
        ev.HazardExtensionRequestedPayload(
            **common, current_deadline=s.at(430), reason="parts", by="officer-fire"
        ),
        minute=407,
    )
    s.tracked(
        ev.HazardExtensionDecided,
        ev.HazardExtensionDecidedPayload(**common, approved=True, deadline=s.at(500), by="op-1"),
        minute=408,
        after=request,
    )


def relapse_closed_on_site(s: Story) -> None:
    """A relapse of an earlier closed hazard, rectified on site and closed at once by tracking."""
    report = s.reported(rectified_on_site=True)
    s.tracked(
        ev.HazardRelapsed,
        ev.HazardRelapsedPayload(
            original_hazard_id=uuid.uuid4(),
            original_department_id="fire",
            original_closed_at=s.at(-3000),
            days_since_closure=2.0,
            same_building=True,
            distance_m=0.0,
            place_key=f"building:{s.building_id}",
        ),
        minute=0,
        after=report,
    )
    s.tracked(
        ev.HazardClosed,
        ev.HazardClosedPayload(reason="rectified_on_site", closed_by="gm-liuyue-01"),
        minute=0,
        after=report,
    )


SCENARIOS: dict[str, Callable[[Story], object]] = {
    f.__name__: f
    for f in (
        rerouted_then_late,
        returned_by_everyone,
        returned_after_receipt,
        escalated_twice,
        duplicate_then_unlinked,
        duplicate,
        no_rule,
        on_site,
    )
}


def uuids_in(value: Any) -> list[str]:
    """Every UUID string in a JSON value, in order of appearance."""
    found: list[str] = []
    if isinstance(value, dict):
        for item in value.values():
            found.extend(uuids_in(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(uuids_in(item))
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            found.append(str(uuid.UUID(value)))
    return found


def labels(story: Story) -> dict[Any, str]:
    """Each id of the story (hazard, events, dispatches, report, original) named by first appearance."""
    labels: dict[Any, str] = {story.building_id: "building", story.lat: "lat"}
    for event in story.events:
        for value in uuids_in(event.model_dump(mode="json")):
            labels.setdefault(value, f"id{len(labels)}")
    return labels


def relabel(value: Any, labels: dict[Any, str]) -> Any:
    if isinstance(value, dict):
        return {k: relabel(v, labels) for k, v in value.items()}
    if isinstance(value, list):
        return [relabel(v, labels) for v in value]
    if isinstance(value, str | float) and value in labels:
        return labels[value]
    return value


def interleave(rng: random.Random, streams: list[list[ev.AnyEvent]]) -> list[ev.AnyEvent]:
    """Merge the streams at random, keeping each stream's own order."""
    queues = [list(s) for s in streams if s]
    out: list[ev.AnyEvent] = []
    while queues:
        q = rng.choice(queues)
        out.append(q.pop(0))
        if not q:
            queues.remove(q)
    return out


def imported(s: Story) -> None:
    """A past record loaded by the history import (#18): its whole outcome in one event, a relapse
    of an earlier imported record. Reporting applies it; tracking keeps a closed one only as a relapse
    candidate (no case); no other consumer acts on it."""
    s.add(
        ev.HazardImported,
        ev.HazardImportedPayload(
            record_id=f"R-{s.n}",
            import_id=uuid.uuid4(),
            category="locked_rooftop_door",
            location=ev.Location(lat=s.lat, lon=114.16813, address="Liuyue Rd 12", building_id=s.building_id),
            grid_id="liuyue-01",
            community_id="liuyue",
            street_id="henggang",
            observed_at=s.at(-60 * 24 * 400),
            notice_issued=True,
            department_id="fire",
            dispatch_id=uuid.uuid4(),
            dispatched_at=s.at(-60 * 24 * 400 + 30),
            acknowledged_at=s.at(-60 * 24 * 400 + 200),
            receipt_deadline=s.at(-60 * 24 * 400 + 150),
            rectified_at=s.at(-60 * 24 * 395),
            closed_at=s.at(-60 * 24 * 394),
            relapse_of=uuid.uuid4(),
            relapse_of_record_id=f"R-{s.n}-old",
        ),
        minute=0,
        producer="intake",
    )


# What other services publish plus what tracking publishes: the histories consumers other than
# tracking see, with every event type.
WHOLE_SCENARIOS: dict[str, Callable[[Story], object]] = {
    **SCENARIOS,
    whole_life.__name__: whole_life,
    relapse_closed_on_site.__name__: relapse_closed_on_site,
    imported.__name__: imported,
}


class Replay:
    """A reference copy of every scenario in publish order, and shuffled copies with duplicates."""

    def __init__(self, scenarios: dict[str, Callable[[Story], object]], *, copies: int, seed: int) -> None:
        rng = random.Random(seed)
        self.reference: dict[str, Story] = {}
        self.shuffled: dict[str, list[Story]] = {}
        streams: list[list[ev.AnyEvent]] = []
        n = 0
        for name, build in scenarios.items():
            n += 1
            story = self.reference[name] = Story(n)
            build(story)
            streams.append(list(story.events))  # in publish order
            self.shuffled[name] = []
            for _ in range(copies):
                n += 1
                copy = Story(n)
                build(copy)
                self.shuffled[name].append(copy)
                mixed = [*copy.events, *rng.sample(copy.events, k=rng.randint(1, len(copy.events)))]
                rng.shuffle(mixed)
                streams.append(mixed)
        self.sent = interleave(rng, streams)  # each copy's order kept, hazards interleaved

    @property
    def types(self) -> set[str]:
        """Every event type in the histories."""
        return {e.TYPE for e in self.sent}

    @property
    def event_ids(self) -> set[uuid.UUID]:
        """Every distinct event id sent."""
        return {e.event_id for e in self.sent}


def applied(db_url: str, schema: str, ids: set[uuid.UUID]) -> Callable[[], Any]:
    """A predicate for ``wait_for``: every id is in the service's inbox (applied, or its own)."""

    async def done() -> bool:
        engine = create_engine(DatabaseSettings(url=db_url))
        try:
            async with engine.connect() as conn:
                found = await conn.execute(
                    sa.text(
                        f"SELECT count(*) FROM {schema}.inbox_batches, unnest(event_ids) AS u(id)"
                        " WHERE u.id = ANY(:ids)"
                    ),
                    {"ids": list(ids)},
                )
                return int(found.scalar_one()) >= len(ids)
        finally:
            await engine.dispose()

    return done
