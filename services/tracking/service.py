"""Units of work of the tracking service: load cases, ask the domain, store entries, events and timers.

Each function runs inside the caller's transaction (the consumer's batch, an API
request, a timer sweep) and leaves committing to it. Every event tracking
publishes is written to the timeline, the outbox and the inbox together, so
when it comes back from the topic it is skipped as already applied.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.tracking import domain, metrics, repository
from services.tracking.domain import Case, Progress
from shared import events as ev
from shared import tracing
from shared.consumer import each_event
from shared.db import after_commit
from shared.outbox import Outbox
from shared.reference import ReferenceData, UnknownReference

Reject = Callable[[ev.AnyEvent, str], Awaitable[None]]


@dataclass(frozen=True)
class Casework:
    """What the units of work need besides a session: reference data, thresholds, inbox and outbox."""

    reference: ReferenceData
    inbox: sa.Table
    outbox: Outbox
    relapse_distance_m: float | None = None
    extension_limit: timedelta = domain.DEFAULT_EXTENSION_LIMIT

    @property
    def distance_m(self) -> float:
        """How near a closed case must be for a new report to relapse it."""
        return self.relapse_distance_m or self.reference.duplicate_distance_m


class CaseNotFound(LookupError):  # noqa: N818 - reads as what happened
    """No case with this hazard id."""


@dataclass
class _Batch:
    """Cases loaded for one unit of work, with what must be written back."""

    progress: dict[uuid.UUID, Progress]
    stored: dict[uuid.UUID, int]
    relapses: list[ev.HazardRelapsed]
    orders: list[ev.HazardRectificationOrdered] = field(default_factory=list)  # from the stream


async def _load(session: AsyncSession, hazard_ids: set[uuid.UUID]) -> _Batch:
    await repository.lock_cases(session, hazard_ids)
    entries = await repository.load_entries(session, hazard_ids)
    return _Batch(
        progress={h: Progress(hazard_id=h, entries=list(found)) for h, found in entries.items()},
        stored={h: len(found) for h, found in entries.items()},
        relapses=[],
    )


async def _save(session: AsyncSession, batch: _Batch, *, work: Casework, now: datetime) -> None:
    new_entries = [entry.event for h, p in batch.progress.items() for entry in p.entries[batch.stored[h] :]]
    await repository.add_entries(session, new_entries)
    own = [event for p in batch.progress.values() for event in p.emitted]
    await repository.mark_applied(session, work.inbox, [e.event_id for e in own])
    await work.outbox.add(session, *own)
    orders = [e for e in own if isinstance(e, ev.HazardRectificationOrdered)]
    await repository.add_timers(session, [*batch.orders, *orders])
    moves = [
        (batch.progress[e.hazard_id].case.order_event_id, e.payload.deadline)
        for e in own
        if isinstance(e, ev.HazardExtensionDecided)
        and e.payload.stage == "rectification"
        and e.payload.approved
    ]
    await repository.reschedule_timers(session, [(o, at) for o, at in moves if o is not None])
    keep = [
        p.case.order_event_id
        for p in batch.progress.values()
        if p.case.state == "rectification_ordered" and p.case.order_event_id is not None
    ]
    await repository.cancel_timers(session, hazard_ids=list(batch.progress), keep=keep, now=now)
    hotspots: set[uuid.UUID] = set()
    for relapse in batch.relapses:
        case = batch.progress[relapse.hazard_id].case
        minimum = work.reference.hotspot_min_relapses
        count = await repository.count_relapse(session, relapse, case=case, min_relapses=minimum)
        if domain.is_hotspot(relapses=count, min_relapses=minimum):
            hotspots.add(relapse.hazard_id)
            if count == minimum:
                after_commit(session, metrics.HOTSPOTS_FLAGGED.inc)
    cases = [p.case for p in batch.progress.values() if p.entries]
    await repository.save_cases(session, cases, hotspots=hotspots, now=now)
    if own:
        # Count only what is committed (a batch that fails is retried and must not count twice).
        after_commit(session, lambda: _count(own))


def _count(own: Sequence[ev.AnyEvent]) -> None:
    for event in own:
        match event:
            case ev.HazardRectificationOrdered(payload=p):
                metrics.RECTIFICATION_ORDERED.labels("rework" if p.round > 1 else "first").inc()
            case ev.HazardRectified():
                metrics.RECTIFIED.inc()
            case ev.HazardVerified(payload=p) if not p.passed:
                metrics.REWORK.inc()
            case ev.HazardClosed(payload=p):
                metrics.CLOSED.labels(p.reason).inc()
            case ev.HazardRelapsed():
                metrics.RELAPSES.inc()
            case ev.HazardRectificationOverdue():
                metrics.RECTIFICATION_OVERDUE.inc()


def _settle(progress: Progress, *, now: datetime, work: Casework) -> None:
    try:
        progress.settle(now=now, reference=work.reference)
    except UnknownReference:
        # A category the reference data does not know has no deadline: the case waits as it is.
        return


async def apply_events(
    session: AsyncSession,
    events: Sequence[ev.AnyEvent],
    *,
    now: datetime,
    work: Casework,
    reject: Reject,
) -> None:
    """Apply new lifecycle events from the stream to their cases, and publish what they call for."""
    batch = await _load(session, {e.hazard_id for e in events})
    reports: list[tuple[ev.HazardReported, uuid.UUID | None]] = []
    for event in each_event(events):
        progress = batch.progress[event.hazard_id]
        if event.TYPE in domain.TRACKING_TYPES:
            before = domain.state_before(progress.entries, event, hazard_id=event.hazard_id)
            reason = domain.refusal(before, event)
            if reason is not None:
                await reject(event, reason)
                continue
        progress.record(event)
        if isinstance(event, ev.HazardReported):
            reports.append((event, None))
        elif isinstance(event, ev.HazardDuplicateUnlinked):
            report = _report_of(progress)
            if report is not None:
                # Its report, no longer a duplicate, is looked at for relapse as a new one would be.
                unlinked = report.payload.model_copy(update={"duplicate_of": None})
                reports.append((report.model_copy(update={"payload": unlinked}), event.event_id))
        elif isinstance(event, ev.HazardRectificationOrdered):
            batch.orders.append(event)
    for relapse in await _detect_relapses(session, reports, now=now, work=work):
        batch.progress[relapse.hazard_id].emit(relapse)
        batch.relapses.append(relapse)
    for progress in batch.progress.values():
        _settle(progress, now=now, work=work)
    await _save(session, batch, work=work, now=now)


def _report_of(progress: Progress) -> ev.HazardReported | None:
    for entry in progress.entries:
        if isinstance(entry.event, ev.HazardReported):
            return entry.event
    return None


async def _detect_relapses(
    session: AsyncSession,
    reports: Sequence[tuple[ev.HazardReported, uuid.UUID | None]],
    *,
    now: datetime,
    work: Casework,
) -> list[ev.HazardRelapsed]:
    """The relapses among new reports (each with the event that asks, when not the report), in one query."""
    queries: list[repository.PlaceQuery] = []
    asked: list[tuple[ev.HazardReported, int, uuid.UUID | None]] = []
    for report, cause in reports:
        p = report.payload
        if p.duplicate_of is not None:
            continue
        try:
            window = work.reference.category(p.category).relapse_window_days
        except UnknownReference:
            continue
        asked.append((report, window, cause))
        queries.append(
            repository.PlaceQuery(
                hazard_id=report.hazard_id,
                category=p.category,
                building_id=p.location.building_id,
                lat=p.location.lat,
                lon=p.location.lon,
                distance_m=work.distance_m,
                closed_since=repository.relapse_window_start(p.observed_at, window),
            )
        )
    found = await repository.list_closed_near(session, queries)
    relapses = []
    for (report, window, cause), candidates in zip(asked, found, strict=True):
        relapse = domain.detect_relapse(
            report, candidates, window_days=window, distance_m=work.distance_m, now=now, causation_id=cause
        )
        if relapse is not None:
            relapses.append(relapse)
    return relapses


async def load_case(session: AsyncSession, hazard_id: uuid.UUID) -> tuple[Case, list[domain.Entry]]:
    """The case and its timeline in order; raises CaseNotFound."""
    entries = (await repository.load_entries(session, [hazard_id]))[hazard_id]
    if not entries:
        raise CaseNotFound(hazard_id)
    ordered = domain.ordered(entries)
    return domain.build_case(hazard_id, ordered), ordered


async def _command(
    session: AsyncSession,
    hazard_id: uuid.UUID,
    decide: Callable[[Case], ev.AnyEvent],
    *,
    visible: Callable[[Case], bool],
    now: datetime,
    work: Casework,
) -> tuple[Case, list[ev.AnyEvent]]:
    batch = await _load(session, {hazard_id})
    progress = batch.progress[hazard_id]
    # A case the caller may not see is not found, exactly as an unknown one (never 403 naming its holder).
    if not progress.entries or not visible(progress.case):
        raise CaseNotFound(hazard_id)
    progress.emit(decide(progress.case))  # raises TransitionRefused / NotPermitted
    _settle(progress, now=now, work=work)
    await _save(session, batch, work=work, now=now)
    return progress.case, list(progress.emitted)


async def rectify_case(
    session: AsyncSession,
    hazard_id: uuid.UUID,
    *,
    department_id: str,
    actor: str,
    note: str,
    photos: Sequence[str],
    visible: Callable[[Case], bool],
    now: datetime,
    work: Casework,
) -> tuple[Case, list[ev.AnyEvent]]:
    """The holding department marks the case rectified; returns the case and the events published."""
    return await _command(
        session,
        hazard_id,
        lambda case: domain.rectify(
            case, department_id=department_id, actor=actor, note=note, photos=photos, now=now
        ),
        visible=visible,
        now=now,
        work=work,
    )


async def verify_case(
    session: AsyncSession,
    hazard_id: uuid.UUID,
    *,
    grid_id: str,
    actor: str,
    passed: bool,
    note: str,
    photos: Sequence[str],
    visible: Callable[[Case], bool],
    now: datetime,
    work: Casework,
) -> tuple[Case, list[ev.AnyEvent]]:
    """A reporter of the case's grid records the verification visit; returns the case and events published."""
    return await _command(
        session,
        hazard_id,
        lambda case: domain.verify(
            case, grid_id=grid_id, actor=actor, passed=passed, note=note, photos=photos, now=now
        ),
        visible=visible,
        now=now,
        work=work,
    )


async def urge_case(
    session: AsyncSession,
    hazard_id: uuid.UUID,
    *,
    actor: str,
    note: str,
    visible: Callable[[Case], bool],
    now: datetime,
    work: Casework,
) -> tuple[Case, list[ev.AnyEvent]]:
    """A supervisor or operator urges (督办) the open dispatch or rectification of a case."""
    return await _command(
        session,
        hazard_id,
        lambda case: domain.urge(case, actor=actor, note=note, now=now),
        visible=visible,
        now=now,
        work=work,
    )


async def request_extension(
    session: AsyncSession,
    hazard_id: uuid.UUID,
    *,
    department_id: str,
    actor: str,
    deadline: datetime,
    reason: str,
    visible: Callable[[Case], bool],
    now: datetime,
    work: Casework,
) -> tuple[Case, list[ev.AnyEvent]]:
    """The holding department asks for a later rectification deadline (raises ExtensionDateRefused: 422)."""
    return await _command(
        session,
        hazard_id,
        lambda case: domain.request_rectification_extension(
            case,
            department_id=department_id,
            actor=actor,
            deadline=deadline,
            reason=reason,
            now=now,
            limit=work.extension_limit,
        ),
        visible=visible,
        now=now,
        work=work,
    )


async def decide_extension(
    session: AsyncSession,
    hazard_id: uuid.UUID,
    *,
    approved: bool,
    actor: str,
    note: str,
    visible: Callable[[Case], bool],
    now: datetime,
    work: Casework,
) -> tuple[Case, list[ev.AnyEvent]]:
    """An operator or supervisor approves or refuses the pending rectification extension."""
    return await _command(
        session,
        hazard_id,
        lambda case: domain.decide_rectification_extension(
            case, approved=approved, actor=actor, note=note, now=now
        ),
        visible=visible,
        now=now,
        work=work,
    )


async def note_progress(
    session: AsyncSession,
    hazard_id: uuid.UUID,
    *,
    department_id: str,
    actor: str,
    note: str,
    photos: Sequence[str],
    visible: Callable[[Case], bool],
    now: datetime,
    work: Casework,
) -> tuple[Case, list[ev.AnyEvent]]:
    """The holding department adds a progress note."""
    return await _command(
        session,
        hazard_id,
        lambda case: domain.note_progress(
            case, department_id=department_id, actor=actor, note=note, photos=photos, now=now
        ),
        visible=visible,
        now=now,
        work=work,
    )


async def fire_due_timers(
    session: AsyncSession, *, now: datetime, work: Casework, limit: int
) -> tuple[int, int]:
    """Fire due rectification timers (once each; stale ones are cancelled); returns (claimed, fired)."""
    # Lock order everywhere: cases first, then timers (the consumer and the API cancel timers
    # while holding the case), so a sweep never deadlocks with them.
    candidates = await repository.list_due_timers(session, now=now, limit=limit)
    if not candidates:
        return 0, 0
    batch = await _load(session, {row.hazard_id for row in candidates})
    due = await repository.claim_timers(session, [row.order_event_id for row in candidates], now=now)
    fired: list[uuid.UUID] = []
    cancelled: list[uuid.UUID] = []
    for row in due:
        progress = batch.progress[row.hazard_id]
        event = domain.overdue(progress.case, order_event_id=row.order_event_id, now=now)
        if event is None:
            cancelled.append(row.order_event_id)
            continue
        progress.emit(event)
        fired.append(row.order_event_id)
    # A span per pass that fired something (tracing on): the events it writes carry it.
    with tracing.current_span(
        "tracking",
        "deadlines fire",
        attributes={"hazard.timers_fired": len(fired), "hazard.timer": "rectification"},
    ):
        await _save(session, batch, work=work, now=now)
    await repository.close_timers(session, fired=fired, cancelled=cancelled, now=now)
    return len(due), len(fired)
