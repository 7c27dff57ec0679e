"""What the fault, abuse and end-to-end checks hold the system to: every hazard accounted for.

The oracles read the lifecycle topic itself (:func:`read_lifecycle`, counted by distinct
``event_id``) and reporting's totals, and say what is wrong (:func:`invariant_problems`,
:func:`account`): nothing accepted lost, nothing dispatched twice, every accepted report
decided (dispatched, linked as a duplicate, fixed on the spot or referred to operators).
The benchmarks (``bench.end_to_end``) account for their load with the same functions.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from bench.loadgen import Accepted, Principal, items_of
from shared.events import parse_event

# ---------------------------------------------------------------- reading the topic


@dataclass
class TopicFacts:
    """What the lifecycle topic says, counted by distinct ``event_id`` (redeliveries noted apart)."""

    records: int = 0
    redelivered: int = 0
    event_ids: set[str] = field(default_factory=set)
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)
    reported_twice: set[str] = field(default_factory=set)
    dispatched_ts: dict[str, float] = field(default_factory=dict)
    # When dispatch decided (the event's ``occurred_at``: its transaction's clock), by hazard.
    dispatched_decided: dict[str, float] = field(default_factory=dict)
    reported_ts: dict[str, float] = field(default_factory=dict)
    dispatch_counts: Counter[str] = field(default_factory=Counter)
    dispatch_ids: set[str] = field(default_factory=set)
    dispatch_hazard: dict[str, tuple[str, float]] = field(default_factory=dict)
    # What replaced each dispatch ((hazard, previous dispatch id) -> how many new dispatches or referrals),
    # and per hazard how often it was assigned from the operators' queue and referred to it.
    replaced: Counter[tuple[str, str]] = field(default_factory=Counter)
    queue_assignments: Counter[str] = field(default_factory=Counter)
    referrals: Counter[str] = field(default_factory=Counter)
    acknowledged: Counter[str] = field(default_factory=Counter)
    referred: set[str] = field(default_factory=set)
    receipt_overdue: Counter[str] = field(default_factory=Counter)
    escalations: Counter[tuple[str, int]] = field(default_factory=Counter)
    ordered: Counter[tuple[str, int]] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    last_ts: float = 0.0


class TopicFollower:
    """Reads the lifecycle topic from the beginning and keeps up with it, noting facts as it goes."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.facts = TopicFacts()
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []

    async def start(self) -> None:
        """Connect and seek to the beginning."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            request_timeout_ms=40_000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic)
        while not partitions:
            await consumer.client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic)
        self._tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(self._tps)
        await consumer.seek_to_beginning(*self._tps)
        self._consumer = consumer

    async def catch_up(self) -> TopicFacts:
        """Read everything written so far."""
        consumer = self._consumer
        assert consumer is not None
        ends = await consumer.end_offsets(self._tps)
        while any([await consumer.position(tp) < ends[tp] for tp in self._tps]):
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for records in batch.values():
                for record in records:
                    _note(self.facts, record)
        return self.facts

    async def stop(self) -> None:
        """Disconnect."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def read_lifecycle(bootstrap: str, topic: str) -> TopicFacts:
    """Read the whole topic once into ``TopicFacts``."""
    follower = TopicFollower(bootstrap, topic)
    await follower.start()
    try:
        return await follower.catch_up()
    finally:
        await follower.stop()


def _note(facts: TopicFacts, record: Any) -> None:
    facts.records += 1
    try:
        # Validated like the consumers do: a record they dead-letter is not a fact.
        event = parse_event(record.value or b"").model_dump(mode="json")
    except ValidationError:
        facts.types["<invalid>"] += 1
        return
    event_id = str(event.get("event_id"))
    if event_id in facts.event_ids:
        # The same event again (a relay resent it after a crash): at-least-once, not a new fact.
        facts.redelivered += 1
        return
    facts.event_ids.add(event_id)
    kind = event.get("event_type")
    facts.types[str(kind)] += 1
    hazard = str(event.get("hazard_id"))
    ts = record.timestamp / 1000
    facts.last_ts = max(facts.last_ts, ts)
    payload = event.get("payload") or {}
    if not isinstance(payload, dict):
        return
    if kind == "hazard.reported":
        if hazard in facts.reported:
            facts.reported_twice.add(hazard)
        facts.reported[hazard] = payload
        facts.reported_ts.setdefault(hazard, ts)
    elif kind == "hazard.dispatched":
        facts.dispatch_ids.add(str(payload.get("dispatch_id")))
        facts.dispatch_hazard[str(payload.get("dispatch_id"))] = (hazard, ts)
        previous = payload.get("previous_dispatch_id")
        if payload.get("reason", "routed") == "routed":
            facts.dispatch_counts[hazard] += 1
        elif previous is not None:
            facts.replaced[(hazard, str(previous))] += 1
        else:
            facts.queue_assignments[hazard] += 1
        facts.dispatched_ts.setdefault(hazard, ts)
        decided = event.get("occurred_at")
        if isinstance(decided, str) and hazard not in facts.dispatched_decided:
            with contextlib.suppress(ValueError):
                facts.dispatched_decided[hazard] = datetime.fromisoformat(decided).timestamp()
    elif kind == "hazard.acknowledged":
        facts.acknowledged[str(payload.get("dispatch_id"))] += 1
    elif kind == "hazard.referred_to_operators":
        facts.referred.add(hazard)
        facts.referrals[hazard] += 1
        if payload.get("previous_dispatch_id") is not None:
            facts.replaced[(hazard, str(payload["previous_dispatch_id"]))] += 1
    elif kind == "hazard.receipt_overdue":
        facts.receipt_overdue[str(payload.get("dispatch_id"))] += 1
    elif kind == "hazard.escalated":
        facts.escalations[(str(payload.get("dispatch_id")), int(payload.get("level", 0)))] += 1
    elif kind == "hazard.rectification_ordered":
        facts.ordered[(hazard, int(payload.get("round", 1)))] += 1
    elif kind == "hazard.closed":
        facts.closed[hazard] += 1


def dispatched_twice(facts: TopicFacts) -> set[str]:
    """Hazards two departments held at once, however each dispatch was made.

    A hazard is routed once; every later dispatch either replaces one before it (rerouted after a
    return, reassigned by an operator: ``previous_dispatch_id``), or is assigned from the operators'
    queue after a referral. So: routed twice, one dispatch replaced twice (by two dispatches, or by
    a dispatch and a referral), a replacement naming another hazard's dispatch, or more queue
    assignments than referrals, is a double dispatch.
    """
    twice = {h for h, n in facts.dispatch_counts.items() if n > 1}
    twice |= {h for (h, _previous), n in facts.replaced.items() if n > 1}
    twice |= {
        h
        for (h, previous) in facts.replaced
        if previous in facts.dispatch_hazard and facts.dispatch_hazard[previous][0] != h
    }
    twice |= {h for h, n in facts.queue_assignments.items() if n > facts.referrals[h]}
    return twice


def invariant_problems(facts: TopicFacts) -> list[str]:
    """What must never happen, over the whole topic: a second report, dispatch, escalation, order or closure."""
    problems = []
    if facts.reported_twice:
        problems.append(f"{len(facts.reported_twice)} hazards reported by two different events")
    twice = dispatched_twice(facts)
    if twice:
        problems.append(
            f"{len(twice)} hazards dispatched twice (held by two dispatches at once: routed, rerouted, "
            f"reassigned or assigned from the queue twice), e.g. {min(twice)}"
        )
    for name, counter in (
        ("acknowledgements", facts.acknowledged),
        ("receipt-overdue events", facts.receipt_overdue),
        ("escalations", facts.escalations),
        ("rectification orders (same round)", facts.ordered),
        ("closures", facts.closed),
    ):
        repeated = [k for k, n in counter.items() if n > 1]
        if repeated:
            problems.append(f"{len(repeated)} {name} fired twice, e.g. {repeated[0]}")
    return problems


def account(accepted: list[Accepted], facts: TopicFacts) -> dict[str, Any]:
    """Every accepted hazard accounted for on the topic; counts of each outcome and the problems.

    A hazard is decided when dispatch dispatched it, or it is a linked duplicate, or it was fixed
    on site, or it went to the operators' queue (at once, or after every candidate returned it).
    """
    ids = {a.hazard_id for a in accepted}
    reported = {h: facts.reported[h] for h in ids if h in facts.reported}
    duplicates = {h for h, p in reported.items() if p.get("duplicate_of")}
    on_site = {h for h, p in reported.items() if p.get("rectified_on_site") and h not in duplicates}
    dispatched = {h for h in ids if h in facts.dispatched_ts}
    referred_only = {h for h in ids if h in facts.referred} - dispatched - duplicates - on_site
    undecided = set(reported) - dispatched - duplicates - on_site - referred_only
    wrongly = dispatched & (duplicates | on_site)
    twice = ids & dispatched_twice(facts)
    problems = []
    if not ids:
        problems.append("no hazard was accepted")
    if len(reported) != len(ids):
        problems.append(f"{len(ids) - len(reported)} accepted hazards have no hazard.reported event")
    if wrongly:
        problems.append(f"{len(wrongly)} dispatched although duplicates or fixed on site")
    if undecided:
        problems.append(f"{len(undecided)} not dispatched (nor duplicate/on-site/referred)")
    if twice:
        problems.append(f"{len(twice)} hazards dispatched twice")
    escalated_twice = [k for k, n in facts.escalations.items() if n > 1]
    problems += [p for p in invariant_problems(facts) if "held by two dispatches" not in p]
    return {
        "accepted": len(ids),
        "reported_events": len(reported),
        "duplicates": len(duplicates),
        "rectified_on_site": len(on_site),
        "referred_to_operators": len(referred_only),
        "dispatched": len(dispatched - duplicates - on_site),
        "dispatched_twice": len(twice),
        "escalated_twice": len(escalated_twice),
        "problems": problems,
    }


# ---------------------------------------------------------------- reporting


async def reporting_totals(
    client: httpx.AsyncClient, base: str, supervisor: Principal
) -> dict[str, Any] | None:
    """Reporting's summary totals over its default period (the last 30 days), or None if it cannot say."""
    try:
        response = await client.get(
            f"{base}/api/v1/reports/summary", params={"group_by": "category"}, headers=supervisor.headers
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    body = response.json()
    totals = body.get("totals") if isinstance(body, dict) else None
    if isinstance(totals, dict):
        return totals
    rows = items_of(body, "groups", "rows")
    return {"reported": sum(int(r.get("reported") or 0) for r in rows)}


async def reporting_count(client: httpx.AsyncClient, base: str, supervisor: Principal) -> int | None:
    """Hazards reporting has counted: ``reported`` plus ``duplicates`` (it files duplicates apart)."""
    totals = await reporting_totals(client, base, supervisor)
    if totals is None:
        return None
    return int(totals.get("reported") or 0) + int(totals.get("duplicates") or 0)
