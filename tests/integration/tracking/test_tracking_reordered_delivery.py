"""Reordered delivery to tracking alone: events of every type other services publish, for new hazards (#14).

Only tracking runs, on its own topics and group, against the real PostgreSQL and broker. It is fed
complete, realistic histories of several kinds of hazards — what intake and dispatch publish, with
the causation links and shared instants dispatch really stamps — once in publish order (the
reference) and many more times, each copy a new hazard never applied before, with every event
type shuffled, some events duplicated, and all hazards interleaved. Each copy's case must end as
the in-order copy's does: the same state, fields and history of the stream's events.

What may differ, by design, is what tracking itself emitted on the way: it reacts to the case as
it knows it when a batch is applied. A rectification order issued for a receipt that is later
returned (in order) is never issued when the return is already known (shuffled); either way the
order has lapsed and the case stands the same. So tracking's own entries are compared as the set
of reactions the final case still depends on: the current order (its round and department) or the
closure.

The histories are stamped a day ahead of the wall clock, as if tracking reacted at once: its own
events are stamped just after the latest entry they follow (``domain._own_time``), as they are in
production where the stream's events are stamped at the moment they happen.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from shared import events as ev
from shared.db import create_engine
from shared.events import dump_event
from shared.settings import DatabaseSettings
from tests.integration.tracking.tracking_helpers import AppFactory, app_factory, auth
from tests.support.kafka_tools import produce, read_topic, wait_for

pytestmark = pytest.mark.integration

START = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
RULE = ev.FrozenDeadlineRule(minutes=120, working_time=True)
SHUFFLED_COPIES = 8


@pytest.fixture
def tracking_app(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    return app_factory(db_url, kafka, topics)


class Story:
    """One hazard's history as other services publish it; ``n`` keeps copies apart (place, building)."""

    def __init__(self, n: int) -> None:
        self.hazard_id = uuid.uuid4()
        self.n = n
        # ~1 km apart, a building each: no copy is a relapse or duplicate of another.
        self.lat = round(22.50 + 0.01 * n, 5)
        self.building_id = f"B-R{n}"
        self.events: list[ev.AnyEvent] = []

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
        self, department: str, *, minute: int, after: ev.AnyEvent | None = None, previous: uuid.UUID | None = None
    ) -> uuid.UUID:
        dispatch_id = uuid.uuid4()
        self.add(
            ev.HazardDispatched,
            ev.HazardDispatchedPayload(
                dispatch_id=dispatch_id,
                department_id=department,
                rule_id="r1",
                receipt_deadline=self.at(minute + 120),
                deadline_rule=RULE,
                reason="routed" if previous is None else "rerouted",
                previous_dispatch_id=previous,
            ),
            minute=minute,
            causation=after,
        )
        return dispatch_id

    def acknowledged(self, dispatch_id: uuid.UUID, department: str, *, minute: int, on_time: bool = True) -> None:
        self.add(
            ev.HazardAcknowledged,
            ev.HazardAcknowledgedPayload(
                dispatch_id=dispatch_id,
                department_id=department,
                acknowledged_at=self.at(minute),
                receipt_deadline=self.at(minute + 60),
                on_time=on_time,
                acknowledged_by=f"officer-{department}",
            ),
            minute=minute,
        )

    def returned(self, dispatch_id: uuid.UUID, department: str, *, minute: int, after_receipt: bool = False) -> Any:
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
            ev.HazardReceiptOverduePayload(dispatch_id=dispatch_id, department_id=department, receipt_deadline=deadline),
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


def rerouted_then_late(s: Story) -> None:
    """Gas is late, escalated and returns it; dispatch reroutes to fire at that instant; fire acknowledges late."""
    s.reported()
    gas = s.dispatched("gas", minute=1)
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
    s.acknowledged(police, "police", minute=50)


def escalated_twice(s: Story) -> None:
    """Fire misses the receipt deadline, two escalation levels, then acknowledges late."""
    s.reported()
    fire = s.dispatched("fire", minute=1)
    s.late(fire, "fire", minute=121, levels=2)
    s.acknowledged(fire, "fire", minute=200, on_time=False)


def duplicate_then_unlinked(s: Story) -> None:
    """A duplicate of an open original, unlinked once the original is known closed; then dispatched."""
    original = uuid.uuid4()
    s.reported(duplicate_of=original)
    s.add(
        ev.HazardDuplicateLinked,
        ev.HazardDuplicateLinkedPayload(original_hazard_id=original, distance_m=8.0, same_building=True),
        minute=0,
        producer="intake",
    )
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


def duplicate(s: Story) -> None:
    original = uuid.uuid4()
    s.reported(duplicate_of=original)
    s.add(
        ev.HazardDuplicateLinked,
        ev.HazardDuplicateLinkedPayload(original_hazard_id=original, distance_m=3.0, same_building=True),
        minute=0,
        producer="intake",
    )


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

SCENARIOS: dict[str, Callable[[Story], None]] = {
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


def _uuids(value: Any) -> list[str]:
    """Every UUID string in a JSON value, in order of appearance."""
    found: list[str] = []
    if isinstance(value, dict):
        for item in value.values():
            found.extend(_uuids(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_uuids(item))
    elif isinstance(value, str):
        try:
            found.append(str(uuid.UUID(value)))
        except ValueError:
            pass
    return found


def _labels(story: Story) -> dict[Any, str]:
    """Each id of the story (hazard, events, dispatches, report, original) named by first appearance."""
    labels: dict[Any, str] = {story.building_id: "building", story.lat: "lat"}
    for event in story.events:
        for value in _uuids(event.model_dump(mode="json")):
            labels.setdefault(value, f"id{len(labels)}")
    return labels


def _relabel(value: Any, labels: dict[Any, str]) -> Any:
    if isinstance(value, dict):
        return {k: _relabel(v, labels) for k, v in value.items()}
    if isinstance(value, list):
        return [_relabel(v, labels) for v in value]
    if isinstance(value, str | float) and value in labels:
        return labels[value]
    return value


def normalized(view: dict[str, Any], story: Story) -> dict[str, Any]:
    """The case with the story's ids named by role; tracking's own entries set apart."""
    labels = _labels(story)
    own = [e for e in view["timeline"] if e["producer"] == "tracking"]
    for n, entry in enumerate(own):
        labels[entry["event_id"]] = f"own{n}"
    case = _relabel(view, labels)
    case["timeline"] = [e for e in case["timeline"] if e["producer"] != "tracking"]
    case["own"] = [(e["event_type"], e["details"]) for e in _relabel(own, labels)]
    return case


def _still_in_force(case: dict[str, Any]) -> list[tuple[str, Any]]:
    """Tracking's own entries the final case rests on: the current order, or the closure."""
    if case["state"] == "rectification_ordered":
        orders = [d for t, d in case["own"] if t == "hazard.rectification_ordered"]
        return [("order", (orders[-1]["department_id"], orders[-1]["round"], case["rectification_round"]))]
    if case["state"] == "closed":
        return [("closed", [d for t, d in case["own"] if t == "hazard.closed"])]
    return []


def _brief(case: dict[str, Any], key: str) -> Any:
    """A difference, short enough to read."""
    if key == "timeline":
        return [(e["event_type"], e["occurred_at"][11:19]) for e in case["timeline"]]
    if key == "own":
        return [t for t, _ in case["own"]]
    return case.get(key)


async def _applied(db_url: str, ids: set[uuid.UUID]) -> Callable[[], Any]:
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]

    async def done() -> bool:
        async with engine.connect() as conn:
            n = (
                await conn.execute(
                    sa.text("SELECT count(*) FROM tracking.inbox WHERE event_id = ANY(:ids)"),
                    {"ids": list(ids)},
                )
            ).scalar_one()
        if int(n) >= len(ids):
            await engine.dispose()
            return True
        return False

    return done


def _interleave(rng: random.Random, streams: list[list[ev.AnyEvent]]) -> list[ev.AnyEvent]:
    """Merge the streams at random, keeping each stream's own order."""
    queues = [list(s) for s in streams if s]
    out: list[ev.AnyEvent] = []
    while queues:
        q = rng.choice(queues)
        out.append(q.pop(0))
        if not q:
            queues.remove(q)
    return out


async def test_every_event_type_in_any_order_ends_as_in_order_for_new_hazards(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str], db_url: str
) -> None:
    rng = random.Random(1414)
    n = 0
    reference: dict[str, Story] = {}
    shuffled: dict[str, list[Story]] = {}
    streams: list[list[ev.AnyEvent]] = []
    for name, build in SCENARIOS.items():
        n += 1
        story = reference[name] = Story(n)
        build(story)
        streams.append(list(story.events))  # in publish order
        shuffled[name] = []
        for _ in range(SHUFFLED_COPIES):
            n += 1
            copy = Story(n)
            build(copy)
            shuffled[name].append(copy)
            mixed = [*copy.events, *rng.sample(copy.events, k=rng.randint(1, len(copy.events)))]
            rng.shuffle(mixed)
            streams.append(mixed)
    covered = {e.TYPE for s in reference.values() for e in s.events}
    assert covered == set(ev.EVENT_TYPES) - {
        ev.HazardRectificationOrdered.TYPE,
        ev.HazardRectified.TYPE,
        ev.HazardRectificationOverdue.TYPE,
        ev.HazardVerified.TYPE,
        ev.HazardClosed.TYPE,
        ev.HazardRelapsed.TYPE,
    }, "every type another service publishes is in the histories"
    sent = _interleave(rng, streams)
    expected_ids = {e.event_id for e in sent}

    async with tracking_app() as (_app, client):
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in sent],
        )
        await wait_for(await _applied(db_url, expected_ids), timeout_s=120, interval_s=0.3)

        async def view(story: Story) -> dict[str, Any]:
            response = await client.get(f"/api/v1/hazards/{story.hazard_id}", headers=auth("tok-supervisor"))
            assert response.status_code == 200, response.text
            return normalized(response.json(), story)

        mismatches: list[str] = []
        for name, story in reference.items():
            want = await view(story)
            assert (want["state"], want["department_id"]) == SCENARIOS_END[name], name
            for k, copy in enumerate(shuffled[name]):
                got = await view(copy)
                problems = [
                    key
                    for key in sorted(set(want) | set(got))
                    if key != "own" and want.get(key) != got.get(key)
                ]
                if _still_in_force(want) != _still_in_force(got):
                    problems.append("own")
                if problems:
                    mismatches.append(
                        f"{name} copy {k}: "
                        + "; ".join(f"{p}: in order {_brief(want, p)}, shuffled {_brief(got, p)}" for p in problems)
                    )
        assert not mismatches, "\n".join(mismatches)

    dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=3)
    assert dead == [], "no event another service publishes is refused, whatever its order"
