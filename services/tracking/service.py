"""Use cases of the tracking service: load cases, ask the domain, store entries, events and timers.

Each use case is a plain ``async def verb_noun(uow, ...)``: ``uow`` is one transaction (a
consumer's batch, an API request, a timer sweep) with the tracking repository, the database's
now and the outbox; committing is the caller's. Refusals are domain exceptions (below), which
the edge turns into the API's error shape. Every event tracking publishes is written to the
timeline, the outbox and the inbox together, so when it comes back from the topic it is
skipped as already applied. Metrics count only what commits (``uow.after_commit``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from services.tracking import domain, metrics, views
from services.tracking.domain import Case, Progress
from services.tracking.repository import OPEN_STATES, PlaceQuery, TrackingRepository, relapse_window_start
from shared import events as ev
from shared import tracing
from shared.auth import Principal
from shared.consumer import each_event
from shared.domain_errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from shared.reference import ReferenceData, UnknownReference
from shared.uow import UnitOfWork

# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrackingConfig:
    """What the use cases need besides a unit of work: reference data and thresholds (built once)."""

    reference: ReferenceData
    relapse_distance_m: float | None = None
    extension_limit: timedelta = domain.DEFAULT_EXTENSION_LIMIT

    @property
    def distance_m(self) -> float:
        """How near a closed case must be for a new report to relapse it."""
        return self.relapse_distance_m or self.reference.duplicate_distance_m


# ---------------------------------------------------------------------------- refusals


class CaseNotFound(NotFoundError):  # noqa: N818 - reads as what happened
    """No case with this hazard id, or one the caller may not see (the two read alike)."""

    def __init__(self, hazard_id: uuid.UUID) -> None:
        super().__init__(f"No hazard {hazard_id} that you may see.")
        self.hazard_id = hazard_id


class NotYours(ForbiddenError):  # noqa: N818 - reads as what happened
    """The caller sees the case but may not act on it (not the holding department, not its grid)."""


class InvalidStateError(ConflictError):
    """The case's state refuses the action; details name the action."""

    code = "invalid_state"

    def __init__(self, message: str, *, action: str) -> None:
        super().__init__(message, details=[{"action": action}])


class InvalidDeadlineError(InvalidError):
    """A requested deadline not after the one in force, or too far beyond it."""

    code = "invalid_deadline"


# ---------------------------------------------------------------------------- units of work


TrackingWork = UnitOfWork[TrackingRepository]
E = TypeVar("E", bound=ev.AnyEvent)


class EventWork(UnitOfWork[TrackingRepository], Protocol):
    """A consumer's unit of work: it may also refuse one event (dead-lettered with the reason)."""

    async def reject(self, event: ev.AnyEvent, reason: str) -> None: ...


@dataclass
class _Batch:
    """Cases loaded for one unit of work, with what must be written back."""

    progress: dict[uuid.UUID, Progress]
    stored: dict[uuid.UUID, int]
    relapses: list[ev.HazardRelapsed] = field(default_factory=list)
    orders: list[ev.HazardRectificationOrdered] = field(default_factory=list)  # from the stream


async def _load(uow: TrackingWork, hazard_ids: set[uuid.UUID]) -> _Batch:
    await uow.repo.lock_cases(hazard_ids)
    entries = await uow.repo.load_entries(hazard_ids)
    return _Batch(
        progress={h: Progress(hazard_id=h, entries=list(found)) for h, found in entries.items()},
        stored={h: len(found) for h, found in entries.items()},
    )


async def _save(uow: TrackingWork, batch: _Batch, *, min_relapses: int) -> None:
    repo, now = uow.repo, uow.now
    new_entries = [entry.event for h, p in batch.progress.items() for entry in p.entries[batch.stored[h] :]]
    await repo.add_entries(new_entries)
    own = [event for p in batch.progress.values() for event in p.emitted]
    await repo.mark_applied([e.event_id for e in own])
    await uow.publish(*own)
    orders = [e for e in own if isinstance(e, ev.HazardRectificationOrdered)]
    await repo.add_timers([*batch.orders, *orders])
    moves = [
        (batch.progress[e.hazard_id].case.order_event_id, e.payload.deadline)
        for e in own
        if isinstance(e, ev.HazardExtensionDecided)
        and e.payload.stage == "rectification"
        and e.payload.approved
    ]
    await repo.reschedule_timers([(o, at) for o, at in moves if o is not None])
    keep = [
        p.case.order_event_id
        for p in batch.progress.values()
        if p.case.state == "rectification_ordered" and p.case.order_event_id is not None
    ]
    await repo.cancel_timers(hazard_ids=list(batch.progress), keep=keep, now=now)
    hotspots: set[uuid.UUID] = set()
    for relapse in batch.relapses:
        case = batch.progress[relapse.hazard_id].case
        count = await repo.count_relapse(relapse, case=case, min_relapses=min_relapses)
        if domain.is_hotspot(relapses=count, min_relapses=min_relapses):
            hotspots.add(relapse.hazard_id)
            if count == min_relapses:
                uow.after_commit(metrics.HOTSPOTS_FLAGGED.inc)
    cases = [p.case for p in batch.progress.values() if p.entries]
    await repo.save_cases(cases, hotspots=hotspots, now=now)
    if own:
        # Count only what is committed (a batch that fails is retried and must not count twice).
        uow.after_commit(lambda: _count(own))


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


def _settle(progress: Progress, *, now: datetime, config: TrackingConfig) -> None:
    try:
        progress.settle(now=now, reference=config.reference)
    except UnknownReference:
        # A category the reference data does not know has no deadline: the case waits as it is.
        return


# ---------------------------------------------------------------------------- events from the stream


async def apply_events(uow: EventWork, events: Sequence[ev.AnyEvent], *, config: TrackingConfig) -> None:
    """Apply a batch of new (never applied) events: delivery records beside the timeline, closed
    hazards of the history import where relapse detection looks, lifecycle events to their cases
    (refusing those that do not fit), and publish what they call for."""
    notified = [e for e in events if isinstance(e, ev.HazardNotified)]
    imported = [e for e in events if isinstance(e, ev.HazardImported)]
    lifecycle = [e for e in events if not isinstance(e, ev.HazardNotified | ev.HazardImported)]
    # Delivery records change nothing of the case.
    await uow.repo.add_notifications(notified)
    # A historical hazard is no case (never timed, escalated or notified); a closed one can relapse.
    # Kept before the batch's reports are looked at, so a report in the same batch finds it.
    await uow.repo.add_imported_closures(imported)
    if lifecycle:
        await _apply_lifecycle(uow, lifecycle, config=config)


async def _apply_lifecycle(uow: EventWork, events: Sequence[ev.AnyEvent], *, config: TrackingConfig) -> None:
    batch = await _load(uow, {e.hazard_id for e in events})
    reports: list[tuple[ev.HazardReported, uuid.UUID | None]] = []
    for event in each_event(events):
        progress = batch.progress[event.hazard_id]
        if event.TYPE in domain.TRACKING_TYPES:
            before = domain.state_before(progress.entries, event, hazard_id=event.hazard_id)
            reason = domain.refusal(before, event)
            if reason is not None:
                await uow.reject(event, reason)
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
    for relapse in await _detect_relapses(uow, reports, config=config):
        batch.progress[relapse.hazard_id].emit(relapse)
        batch.relapses.append(relapse)
    for progress in batch.progress.values():
        _settle(progress, now=uow.now, config=config)
    await _save(uow, batch, min_relapses=config.reference.hotspot_min_relapses)


def _report_of(progress: Progress) -> ev.HazardReported | None:
    for entry in progress.entries:
        if isinstance(entry.event, ev.HazardReported):
            return entry.event
    return None


async def _detect_relapses(
    uow: TrackingWork,
    reports: Sequence[tuple[ev.HazardReported, uuid.UUID | None]],
    *,
    config: TrackingConfig,
) -> list[ev.HazardRelapsed]:
    """The relapses among new reports (each with the event that asks, when not the report), in one query."""
    queries: list[PlaceQuery] = []
    asked: list[tuple[ev.HazardReported, int, uuid.UUID | None]] = []
    for report, cause in reports:
        p = report.payload
        if p.duplicate_of is not None:
            continue
        try:
            window = config.reference.category(p.category).relapse_window_days
        except UnknownReference:
            continue
        asked.append((report, window, cause))
        queries.append(
            PlaceQuery(
                hazard_id=report.hazard_id,
                category=p.category,
                building_id=p.location.building_id,
                lat=p.location.lat,
                lon=p.location.lon,
                distance_m=config.distance_m,
                closed_since=relapse_window_start(p.observed_at, window),
            )
        )
    found = await uow.repo.list_closed_near(queries)
    relapses = []
    for (report, window, cause), candidates in zip(asked, found, strict=True):
        relapse = domain.detect_relapse(
            report,
            candidates,
            window_days=window,
            distance_m=config.distance_m,
            now=uow.now,
            causation_id=cause,
        )
        if relapse is not None:
            relapses.append(relapse)
    return relapses


# ---------------------------------------------------------------------------- commands


def _may_see(principal: Principal) -> Callable[[Case], bool]:
    def may_see(case: Case) -> bool:
        return domain.visible_to(
            case, role=principal.role, grid_id=principal.grid_id, department_id=principal.department_id
        )

    return may_see


async def _command(
    uow: TrackingWork,
    hazard_id: uuid.UUID,
    decide: Callable[[Case], E],
    *,
    action: str,
    principal: Principal,
    config: TrackingConfig,
) -> E:
    """Run one command on a case; returns the event it decided (reactions may follow it)."""
    batch = await _load(uow, {hazard_id})
    progress = batch.progress[hazard_id]
    # A case the caller may not see is not found, exactly as an unknown one (never 403 naming its holder).
    if not progress.entries or not _may_see(principal)(progress.case):
        raise CaseNotFound(hazard_id)
    try:
        decided = decide(progress.case)
    except domain.NotPermitted as exc:
        raise NotYours(str(exc)) from None
    except domain.TransitionRefused as exc:
        raise InvalidStateError(str(exc), action=action) from None
    except domain.ExtensionDateRefused as exc:
        raise InvalidDeadlineError.field("deadline", str(exc)) from None
    progress.emit(decided)
    _settle(progress, now=uow.now, config=config)
    await _save(uow, batch, min_relapses=config.reference.hotspot_min_relapses)
    return decided


async def rectify_hazard(
    uow: TrackingWork,
    hazard_id: uuid.UUID,
    *,
    principal: Principal,
    note: str,
    photos: Sequence[str],
    config: TrackingConfig,
) -> views.CaseView:
    """The holding department marks the case rectified; returns the case."""
    await _command(
        uow,
        hazard_id,
        lambda case: domain.rectify(
            case,
            department_id=principal.department_id or "",
            actor=principal.id,
            note=note,
            photos=photos,
            now=uow.now,
        ),
        action="rectification",
        principal=principal,
        config=config,
    )
    return await view_case(uow, hazard_id, principal=principal)


async def verify_hazard(
    uow: TrackingWork,
    hazard_id: uuid.UUID,
    *,
    principal: Principal,
    passed: bool,
    note: str,
    photos: Sequence[str],
    config: TrackingConfig,
) -> views.CaseView:
    """A reporter of the case's grid records the verification visit; returns the case."""
    await _command(
        uow,
        hazard_id,
        lambda case: domain.verify(
            case,
            grid_id=principal.grid_id or "",
            actor=principal.id,
            passed=passed,
            note=note,
            photos=photos,
            now=uow.now,
        ),
        action="verification",
        principal=principal,
        config=config,
    )
    return await view_case(uow, hazard_id, principal=principal)


async def urge_hazard(
    uow: TrackingWork, hazard_id: uuid.UUID, *, principal: Principal, note: str, config: TrackingConfig
) -> ev.HazardUrged:
    """A supervisor or operator urges (督办) the open dispatch or rectification of a case."""
    return await _command(
        uow,
        hazard_id,
        lambda case: domain.urge(case, actor=principal.id, note=note, now=uow.now),
        action="urging",
        principal=principal,
        config=config,
    )


async def note_progress(
    uow: TrackingWork,
    hazard_id: uuid.UUID,
    *,
    principal: Principal,
    note: str,
    photos: Sequence[str],
    config: TrackingConfig,
) -> ev.HazardProgressNoted:
    """The holding department adds a progress note."""
    return await _command(
        uow,
        hazard_id,
        lambda case: domain.note_progress(
            case,
            department_id=principal.department_id or "",
            actor=principal.id,
            note=note,
            photos=photos,
            now=uow.now,
        ),
        action="progress_note",
        principal=principal,
        config=config,
    )


async def request_extension(
    uow: TrackingWork,
    hazard_id: uuid.UUID,
    *,
    principal: Principal,
    deadline: datetime,
    reason: str,
    config: TrackingConfig,
) -> views.CaseView:
    """The holding department asks for a later rectification deadline; returns the case."""
    await _command(
        uow,
        hazard_id,
        lambda case: domain.request_rectification_extension(
            case,
            department_id=principal.department_id or "",
            actor=principal.id,
            deadline=deadline,
            reason=reason,
            now=uow.now,
            limit=config.extension_limit,
        ),
        action="extension",
        principal=principal,
        config=config,
    )
    return await view_case(uow, hazard_id, principal=principal)


async def decide_extension(
    uow: TrackingWork,
    hazard_id: uuid.UUID,
    *,
    principal: Principal,
    approved: bool,
    note: str,
    config: TrackingConfig,
) -> views.CaseView:
    """An operator or supervisor approves or refuses the pending rectification extension."""
    await _command(
        uow,
        hazard_id,
        lambda case: domain.decide_rectification_extension(
            case, approved=approved, actor=principal.id, note=note, now=uow.now
        ),
        action="extension_decision",
        principal=principal,
        config=config,
    )
    return await view_case(uow, hazard_id, principal=principal)


# ---------------------------------------------------------------------------- queries


async def view_case(uow: TrackingWork, hazard_id: uuid.UUID, *, principal: Principal) -> views.CaseView:
    """The case of a hazard with its links and timeline, for those who may see it."""
    repo = uow.repo
    entries = (await repo.load_entries([hazard_id]))[hazard_id]
    if not entries:
        raise CaseNotFound(hazard_id)
    ordered = domain.ordered(entries)
    case = domain.build_case(hazard_id, ordered)
    if not _may_see(principal)(case):
        raise CaseNotFound(hazard_id)
    row = await repo.get_case_row(hazard_id)
    return views.case_view(
        case,
        ordered,
        duplicates=await repo.list_duplicates(hazard_id),
        relapses=await repo.list_relapses(hazard_id),
        hotspot=bool(row.hotspot) if row is not None else False,
        notifications=await repo.list_notifications(hazard_id),
    )


async def list_cases(
    uow: TrackingWork,
    *,
    principal: Principal,
    states: Sequence[str],
    open_only: bool,
    mine: bool,
    extension_awaiting: bool,
    limit: int,
    offset: int,
) -> views.CaseList:
    """Cases the caller may list: a reporter its grid's (``mine``: its own), a department those it holds."""
    grid_id = department_id = reporter_id = None
    if principal.role == "reporter":
        grid_id = principal.grid_id or ""
        if mine:
            reporter_id = principal.id
    elif principal.role == "department":
        department_id = principal.department_id or ""
    wanted = list(states)
    if open_only:
        wanted = [x for x in (wanted or OPEN_STATES) if x in OPEN_STATES] or ["-"]
    rows = await uow.repo.list_cases(
        grid_id=grid_id,
        department_id=department_id,
        reporter_id=reporter_id,
        states=wanted,
        limit=limit,
        offset=offset,
        rectification_extension_awaiting=extension_awaiting,
    )
    return views.CaseList(
        items=[views.CaseSummary.of_row(row) for row in rows],
        limit=limit,
        offset=offset,
        next_offset=offset + len(rows) if len(rows) == limit else None,
    )


async def list_hotspots(uow: TrackingWork, *, config: TrackingConfig) -> views.HotspotList:
    """Places with at least the reference number of relapses, most first."""
    minimum = config.reference.hotspot_min_relapses
    found = await uow.repo.list_hotspots(min_relapses=minimum)
    return views.HotspotList(
        min_relapses=minimum,
        hotspots=[
            views.HotspotView(
                place_key=h.place_key,
                relapses=h.relapses,
                categories=h.categories,
                community_id=h.community_id,
                grid_id=h.grid_id,
                first_relapse_at=h.first_relapse_at.isoformat(),
                last_relapse_at=h.last_relapse_at.isoformat(),
                last_hazard_id=str(h.last_hazard_id),
                flagged_at=h.flagged_at.isoformat() if h.flagged_at is not None else None,
            )
            for h in found
        ],
    )


async def count_cases_by_state(uow: TrackingWork) -> dict[str, int]:
    """How many cases are in each state (every state named, zero when none)."""
    counts = await uow.repo.count_by_state()
    return {state: counts.get(state, 0) for state in domain.STATES}


# ---------------------------------------------------------------------------- timers


async def fire_due_timers(uow: TrackingWork, *, limit: int, config: TrackingConfig) -> tuple[int, int]:
    """Fire due rectification timers (once each; stale ones are cancelled); returns (claimed, fired)."""
    repo, now = uow.repo, uow.now
    # Lock order everywhere: cases first, then timers (the consumer and the API cancel timers
    # while holding the case), so a sweep never deadlocks with them.
    candidates = await repo.list_due_timers(now=now, limit=limit)
    if not candidates:
        return 0, 0
    batch = await _load(uow, {row.hazard_id for row in candidates})
    due = await repo.claim_timers([row.order_event_id for row in candidates], now=now)
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
        await _save(uow, batch, min_relapses=config.reference.hotspot_min_relapses)
    await repo.close_timers(fired=fired, cancelled=cancelled, now=now)
    return len(due), len(fired)
