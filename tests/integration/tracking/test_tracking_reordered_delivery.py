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

import uuid
from typing import Any

import pytest

from shared import events as ev
from shared.events import dump_event
from tests.integration.tracking.tracking_helpers import AppFactory, app_factory, auth
from tests.support.histories import (
    SCENARIOS,
    SCENARIOS_END,
    TRACKING_TYPES,
    Replay,
    Story,
    applied,
    labels,
    no_rule,
    relabel,
    whole_life,
)
from tests.support.kafka_tools import header, produce, read_topic, wait_for

pytestmark = pytest.mark.integration

SHUFFLED_COPIES = 8


@pytest.fixture
def tracking_app(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    return app_factory(db_url, kafka, topics)


def normalized(view: dict[str, Any], story: Story) -> dict[str, Any]:
    """The case with the story's ids named by role; tracking's own entries set apart."""
    names = labels(story)
    own = [e for e in view["timeline"] if e["producer"] == "tracking"]
    for n, entry in enumerate(own):
        names[entry["event_id"]] = f"own{n}"
    case: dict[str, Any] = relabel(view, names)
    case["timeline"] = [e for e in case["timeline"] if e["producer"] != "tracking"]
    case["own"] = [(e["event_type"], e["details"]) for e in relabel(own, names)]
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


async def test_every_event_type_in_any_order_ends_as_in_order_for_new_hazards(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str], db_url: str
) -> None:
    replay = Replay(SCENARIOS, copies=SHUFFLED_COPIES, seed=1414)
    # hazard.imported (#18) is history, no case: tracking only keeps a closed one for relapse detection
    # (tests/integration/tracking/test_tracking_imported.py).
    others = set(ev.EVENT_TYPES) - TRACKING_TYPES - {ev.HazardImported.TYPE}
    assert replay.types == others, "every type another service publishes that tracking reads"
    reference, shuffled, sent = replay.reference, replay.shuffled, replay.sent

    async with tracking_app() as (_app, client):
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in sent],
        )
        await wait_for(applied(db_url, "tracking", replay.event_ids), timeout_s=120, interval_s=0.3)

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
                        + "; ".join(
                            f"{p}: in order {_brief(want, p)}, shuffled {_brief(got, p)}" for p in problems
                        )
                    )
        assert not mismatches, "\n".join(mismatches)

    dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=3)
    assert dead == [], "no event another service publishes is refused, whatever its order"


async def test_tracking_types_from_elsewhere_in_any_order_are_applied_or_refused_with_a_reason(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str], db_url: str
) -> None:
    """Whole lives, tracking's own types included (as another tracking replica publishes them), shuffled.

    Not every order can be applied: a rectification before its order, a verification before the
    rectification. The documented outcome (``tracking/domain.refusal``) is a dead letter with reason
    ``rejected`` and a sentence naming the hazard — never a crash, never a silent loss: every event
    sent is applied (in the inbox) or dead-lettered, and later events still flow.
    """
    replay = Replay({"whole_life": whole_life}, copies=SHUFFLED_COPIES, seed=1418)
    assert TRACKING_TYPES - {ev.HazardRelapsed.TYPE} <= replay.types
    async with tracking_app() as (_app, client):
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in replay.sent],
        )
        # Then one plain hazard after them all: the consumer must have kept going.
        after = Story(99)
        no_rule(after)
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in after.events],
        )
        await wait_for(applied(db_url, "tracking", {e.event_id for e in after.events}), timeout_s=120)
        response = await client.get(f"/api/v1/hazards/{after.hazard_id}", headers=auth("tok-supervisor"))
        assert response.json()["state"] == "referred_to_operators"

        dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=5)
        refused: dict[str, str] = {}
        for record in dead:
            event_id, reason, error = (header(record, k) for k in ("event_id", "dlt_reason", "dlt_error"))
            assert reason == "rejected", (reason, error)
            assert event_id is not None
            assert error is not None
            refused[event_id] = error
        by_id = {str(e.event_id): e for e in replay.sent}
        for event_id, error in refused.items():
            event = by_id[event_id]
            assert event.TYPE in TRACKING_TYPES, (event.TYPE, error)
            assert f"hazard {event.hazard_id}" in error, error
        sent = {e.event_id for e in replay.sent}
        inbox = sent - {uuid.UUID(i) for i in refused}
        await wait_for(applied(db_url, "tracking", inbox), timeout_s=60)
        assert refused, "shuffled, some steps came before what they need, and were refused"
