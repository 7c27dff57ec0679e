"""The intake use case: validate reports, link open duplicates, commit reports and events together.

Single reports, batches and Open311 requests all go through :meth:`Intake.submit`, which
writes every valid item of one request in ONE transaction: the report rows and their outbox
events commit together before anyone is told "accepted". Idempotency rides on the unique
``report_id``: an item whose id is already stored is answered from the stored row (same body:
200 with the same hazard; different body: 409). Two requests racing with the same id both
``INSERT``; the loser meets the unique index, its transaction is rolled back and retried, and
the retry finds the winner's committed row.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import asyncpg
from pydantic import TypeAdapter, ValidationError

from services.intake import domain, metrics
from services.intake import repository as repo
from services.intake.domain import DuplicateMatch, OpenHazard, Policy, Rejection, ReportIn, Source
from shared import tracing
from shared.auth import Principal
from shared.domain_errors import ConflictError, DomainError, ForbiddenError, InvalidError
from shared.errors import validation_details
from shared.events import LifecycleEvent
from shared.outbox import Outbox, wake_relays
from shared.reference import ReferenceData
from shared.uow import UnitOfWork

Outcome = Literal["created", "replayed", "rejected"]
_RACE_RETRIES = 5
_CONNECTION_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one submitted report."""

    index: int
    report_id: uuid.UUID | None
    outcome: Outcome
    hazard_id: uuid.UUID | None = None
    status: str | None = None
    duplicate_of: uuid.UUID | None = None
    error: Rejection | None = None

    @property
    def http_status(self) -> int:
        """201 created, 200 replayed, else the refusal's status."""
        if self.outcome == "created":
            return 201
        if self.outcome == "replayed":
            return 200
        assert self.error is not None
        return self.error.status

    def json(self) -> dict[str, Any]:
        """The item as the API returns it."""
        body: dict[str, Any] = {
            "index": self.index,
            "report_id": None if self.report_id is None else str(self.report_id),
            "outcome": self.outcome,
            "http_status": self.http_status,
        }
        if self.error is not None:
            body["error"] = self.error.body()
        else:
            body["hazard_id"] = str(self.hazard_id)
            body["status"] = self.status
            body["duplicate_of"] = None if self.duplicate_of is None else str(self.duplicate_of)
        return body


# (owner id, hazard id, photo URLs): attaches the owner's own uploaded photos among the URLs.
PhotoAttacher = Callable[[str, uuid.UUID, Sequence[str]], Awaitable[None]]


class _LostRaceError(Exception):
    """Another transaction inserted one of our report ids after we looked; start again."""


_keys = itertools.count()


@dataclass(slots=True)
class _Pending:
    index: int
    report: ReportIn
    body_hash: str
    principal: Principal
    source: Source
    # Unique across requests, since one transaction may carry several requests' reports.
    key: int = field(default_factory=lambda: next(_keys))
    # The request's trace context (tracing on): the group commit writes in another task.
    trace: dict[str, str] = field(default_factory=tracing.current_headers)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ReportForbiddenError(ForbiddenError):
    """A report outside the reporter's grid or buildings (403, e.g. ``grid_not_yours``)."""


class ReportConflictError(ConflictError):
    """A ``report_id`` used before for another body (409 ``report_id_conflict``)."""


class ReportInvalidError(InvalidError):
    """A report the reference data or the policy refuses (422)."""


class BatchTooLargeError(InvalidError):
    """More items than ``INTAKE__LIMITS__BATCH_MAX_ITEMS`` in one batch (422 ``batch_too_large``)."""

    code = "batch_too_large"


_REFUSALS: dict[int, type[DomainError]] = {
    403: ReportForbiddenError,
    409: ReportConflictError,
    422: ReportInvalidError,
}


def refusal(rejection: Rejection) -> DomainError:
    """A refused report as the domain exception of its status (same code, message and details)."""
    kind = _REFUSALS.get(rejection.status)
    if kind is None:  # pragma: no cover - every Rejection is one of the three
        raise ValueError(f"a report refusal with status {rejection.status}")
    return kind(rejection.message, code=rejection.code, details=list(rejection.details))


REPORT: TypeAdapter[ReportIn] = TypeAdapter(ReportIn)


def item_rejection(exc: ValidationError) -> Rejection:
    """A batch item that does not match the schema, as a 422 with the fields at fault."""
    return Rejection(
        422,
        "invalid",
        "The report does not match what this endpoint accepts.",
        tuple(validation_details(exc.errors())),
    )


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What became of each item of a batch, in order, and the counts."""

    results: list[ItemResult]

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome == outcome for r in self.results)


async def report_hazard(intake: Intake, principal: Principal, report: ReportIn) -> ItemResult:
    """Accept one report from the app: created (201) or replayed (200); a refusal is raised."""
    [result] = await intake.submit(principal=principal, items=[report], source="app")
    if result.error is not None:
        raise refusal(result.error)
    return result


async def report_batch(
    intake: Intake, principal: Principal, reports: Sequence[Any], *, max_items: int
) -> BatchOutcome:
    """Check each item of an offline batch, commit the valid ones together, say what became of each."""
    if len(reports) > max_items:
        raise BatchTooLargeError(
            f"A batch holds at most {max_items} reports; this one has {len(reports)}. Split it.",
            details=[{"field": "reports", "problem": f"at most {max_items} items", "type": "too_long"}],
        )
    items: list[ReportIn | Rejection] = []
    for raw in reports:
        try:
            items.append(REPORT.validate_python(raw))
        except ValidationError as exc:
            items.append(item_rejection(exc))
    return BatchOutcome(await intake.submit(principal=principal, items=items, source="batch"))


class Intake:
    """Accepts reports for one service process."""

    def __init__(
        self,
        *,
        pool: repo.WritePool,
        outbox: Outbox,
        reference: ReferenceData,
        policy: Policy,
        clock: Callable[[], datetime] = _utcnow,
        group_commit: GroupCommitter | None = None,
        attach_photos: PhotoAttacher | None = None,
    ) -> None:
        self.pool = pool
        self.attach_photos = attach_photos
        self.group_commit = group_commit
        self.outbox = outbox
        self.reference = reference
        self.policy = policy
        self.clock = clock

    async def submit(
        self, *, principal: Principal, items: Sequence[ReportIn | Rejection], source: Source
    ) -> list[ItemResult]:
        """Accept what is valid and say what became of each item, in order (partial success)."""
        started = time.perf_counter()
        now = self.clock()
        results: dict[int, ItemResult] = {}
        pending: list[_Pending] = []
        first_of: dict[uuid.UUID, _Pending] = {}
        repeats: list[tuple[int, _Pending, str]] = []
        for index, item in enumerate(items):
            if isinstance(item, Rejection):
                results[index] = ItemResult(index, None, "rejected", error=item)
                continue
            reporter_grid, rejection = domain.reporter_scope(principal, item)
            if rejection is None:
                rejection = domain.check_report(
                    item, reporter_grid=reporter_grid, reference=self.reference, now=now, policy=self.policy
                )
            if rejection is not None:
                results[index] = ItemResult(index, item.report_id, "rejected", error=rejection)
                continue
            fingerprint = domain.body_hash(
                item, reporter_id=principal.id, server_stamped_time=source == "open311"
            )
            earlier = first_of.get(item.report_id)
            if earlier is not None:
                repeats.append((index, earlier, fingerprint))
                continue
            entry = _Pending(index, item, fingerprint, principal, source)
            first_of[item.report_id] = entry
            pending.append(entry)
        if pending:
            if self.group_commit is not None and self.group_commit.running and len(pending) == 1:
                committed = await self.group_commit.write(pending, now)
            else:
                # Batches are often re-synced after a lost answer: look for known ids first.
                committed = await self.write(pending, now, look_first=source == "batch")
            for p in pending:
                results[p.index] = committed[p.key]
        for index, earlier, fingerprint in repeats:
            results[index] = _repeat_in_request(index, earlier, fingerprint, results[earlier.index])
        ordered = [results[i] for i in range(len(items))]
        if self.attach_photos is not None:
            await self._attach_photos(principal, items, ordered)
        _count(ordered, pending, source)
        metrics.COMMIT_SECONDS.labels(source).observe(time.perf_counter() - started)
        return ordered

    async def _attach_photos(
        self, principal: Principal, items: Sequence[ReportIn | Rejection], results: Sequence[ItemResult]
    ) -> None:
        """Attach the reporter's uploaded photos named by accepted reports to their hazards.

        After the commit, and again on every replay, so a crash in between heals on the retry.
        """
        assert self.attach_photos is not None
        for item, result in zip(items, results, strict=True):
            if isinstance(item, ReportIn) and item.photos and result.hazard_id is not None:
                await self.attach_photos(principal.id, result.hazard_id, item.photos)

    async def write(
        self, pending: list[_Pending], now: datetime, *, look_first: bool = False
    ) -> dict[int, ItemResult]:
        """Commit these reports in one transaction; results by pending key.

        Without ``look_first`` the first attempt skips looking up known report ids (one round
        trip less for the common, new report); if the insert then meets a known id, the
        transaction is rolled back and retried looking first.
        """
        reconnected = False
        for attempt in range(_RACE_RETRIES):
            try:
                return await self._commit(pending, now=now, look_first=look_first or attempt > 0)
            except _LostRaceError:
                if attempt == _RACE_RETRIES - 1:
                    raise
            except _CONNECTION_LOST as exc:
                # No ping before each use: a connection the database dropped (restart, failover)
                # fails here once, and the retry runs on a fresh one. The lost transaction may
                # have committed: the retry looks the ids up first and answers from the row.
                if reconnected:
                    raise
                reconnected = True
                log.warning("intake write lost its database connection (%r); retrying once", exc)
        raise AssertionError("unreachable")

    async def _commit(
        self, pending: list[_Pending], *, now: datetime, look_first: bool
    ) -> dict[int, ItemResult]:
        results: dict[int, ItemResult] = {}
        async with self.pool.transaction() as conn:
            stored = (
                await repo.raw_existing_reports(conn, [p.report.report_id for p in pending])
                if look_first
                else {}
            )
            fresh: list[_Pending] = []
            for p in pending:
                row = stored.get(p.report.report_id)
                if row is None:
                    fresh.append(p)
                else:
                    results[p.key] = _from_stored(p, row)
            if not fresh:
                return results
            distance = self.policy.duplicate_distance_m
            probes = []
            for p in fresh:
                if p.report.rectified_on_site:
                    continue  # an on-site fix is never a duplicate
                south, north, west, east = domain.bounding_box(
                    p.report.location.lat, p.report.location.lon, distance
                )
                probes.append(
                    repo.Probe(
                        p.key, p.report.category, p.report.location.building_id, south, north, west, east
                    )
                )
            candidates = await repo.raw_open_candidates(conn, probes)
            rows: list[dict[str, Any]] = []
            events: list[Any] = []
            traces: dict[uuid.UUID, dict[str, str]] = {}
            # Earlier originals in this same request count as open hazards for the later items.
            in_request: dict[str, list[OpenHazard]] = {}
            created: dict[int, ItemResult] = {}
            for p in fresh:
                report = p.report
                hazard_id = uuid.uuid4()
                duplicate = domain.find_open_duplicate(
                    report,
                    [*candidates.get(p.key, ()), *in_request.get(report.category, ())],
                    distance_m=distance,
                )
                campaigns = domain.campaign_ids(report, self.reference)
                status, notes, _notice = domain.initial_view(report, duplicate)
                rows.append(
                    _row(
                        hazard_id=hazard_id,
                        pending=p,
                        reference=self.reference,
                        now=now,
                        campaigns=campaigns,
                        duplicate=duplicate,
                        status=status,
                        notes=notes,
                    )
                )
                reported = domain.reported_events(
                    hazard_id=hazard_id,
                    report=report,
                    reporter_id=p.principal.id,
                    reporter_type=p.principal.reporter_type,
                    reference=self.reference,
                    accepted_at=now,
                    source=p.source,
                    campaigns=campaigns,
                    duplicate=duplicate,
                )
                events.extend(reported)
                if p.trace:
                    traces.update((e.event_id, p.trace) for e in reported)
                if duplicate is None and not report.rectified_on_site:
                    in_request.setdefault(report.category, []).append(
                        OpenHazard(
                            hazard_id,
                            report.category,
                            report.location.building_id,
                            report.location.lat,
                            report.location.lon,
                            now,
                        )
                    )
                created[p.key] = ItemResult(
                    p.index,
                    report.report_id,
                    "created",
                    hazard_id=hazard_id,
                    status=status,
                    duplicate_of=None if duplicate is None else duplicate.original_hazard_id,
                )
            # A stable order keeps two concurrent batches from deadlocking on each other's keys.
            # UUID order is .int order: compared as ints, with no Python call per comparison.
            rows.sort(key=lambda r: r["report_id"].int)
            try:
                inserted = await repo.raw_insert(conn, rows, self.outbox.rows(events, traces=traces))
            except asyncpg.UniqueViolationError as exc:
                # A report id already stored (or committed meanwhile by another transaction), or
                # the event whose id is derived from it: roll back and look the ids up first.
                raise _LostRaceError() from exc
            if inserted < len(rows):
                raise _LostRaceError()
            results.update(created)
        # Committed outside Outbox.add: wake this process's relay ourselves.
        wake_relays(self.outbox.table)
        return results


def _row(
    *,
    hazard_id: uuid.UUID,
    pending: _Pending,
    reference: ReferenceData,
    now: datetime,
    campaigns: Sequence[str],
    duplicate: DuplicateMatch | None,
    status: str,
    notes: str,
) -> dict[str, Any]:
    report = pending.report
    return {
        "hazard_id": hazard_id,
        "report_id": report.report_id,
        "body_hash": pending.body_hash,
        "reporter_id": pending.principal.id,
        "source": pending.source,
        "category": report.category,
        "grid_id": report.grid_id,
        "community_id": reference.grid(report.grid_id).community_id,
        "description": report.description,
        "lat": report.location.lat,
        "lon": report.location.lon,
        "address": report.location.address,
        "building_id": report.location.building_id,
        "photos": list(report.photos),
        "observed_at": report.observed_at,
        "rectified_on_site": report.rectified_on_site,
        "campaign_ids": list(campaigns),
        "urgency": report.urgency,
        "duplicate_of": None if duplicate is None else duplicate.original_hazard_id,
        "status": status,
        "status_notes": notes,
        "agency_responsible": None,
        "expected_datetime": None,
        "requested_datetime": now,
        "updated_datetime": now,
        "last_event_at": None,
        "closed_at": now if status == "closed" else None,
    }


def _conflict(report_id: uuid.UUID) -> Rejection:
    return Rejection(
        409,
        "report_id_conflict",
        f"report_id {report_id} was already used for a different report; "
        "send a new report_id for a new report, or the identical body to retry.",
        ({"field": "report_id", "code": "report_id_conflict", "problem": "already used for another body"},),
    )


def _from_stored(p: _Pending, row: Any) -> ItemResult:
    if row.body_hash != p.body_hash:
        return ItemResult(p.index, p.report.report_id, "rejected", error=_conflict(p.report.report_id))
    return ItemResult(
        p.index,
        p.report.report_id,
        "replayed",
        hazard_id=row.hazard_id,
        status=row.status,
        duplicate_of=row.duplicate_of,
    )


def _repeat_in_request(index: int, earlier: _Pending, fingerprint: str, first: ItemResult) -> ItemResult:
    """A report id repeated inside one request: the same body replays the first, another conflicts."""
    report_id = earlier.report.report_id
    if fingerprint != earlier.body_hash or first.outcome == "rejected":
        error = first.error if first.outcome == "rejected" and fingerprint == earlier.body_hash else None
        return ItemResult(index, report_id, "rejected", error=error or _conflict(report_id))
    return ItemResult(
        index,
        report_id,
        "replayed",
        hazard_id=first.hazard_id,
        status=first.status,
        duplicate_of=first.duplicate_of,
    )


def _count(results: Sequence[ItemResult], pending: Sequence[_Pending], source: Source) -> None:
    reports = {p.index: p.report for p in pending}
    for result in results:
        if result.outcome == "created":
            report = reports[result.index]
            metrics.ACCEPTED.labels(report.category, source).inc()
            if result.duplicate_of is not None:
                metrics.DUPLICATES_LINKED.labels(report.category).inc()
            if report.rectified_on_site:
                metrics.RECTIFIED_ON_SITE.labels(report.category).inc()
        elif result.outcome == "replayed":
            metrics.REPLAYED.labels(source).inc()
        elif result.error is not None:
            metrics.REJECTED.labels(result.error.code).inc()


log = logging.getLogger(__name__)
_Job = tuple[list[_Pending], datetime, "asyncio.Future[dict[int, ItemResult]]"]


class GroupCommitter:
    """Commits the reports of concurrent single requests together: one transaction, one fsync.

    Each request still gets its answer only after the transaction holding its report has
    committed. ``workers`` transactions may be in flight at once; each takes whatever has
    queued up (up to ``max_items`` reports) while the previous one was committing, so under
    light load a request commits alone and waits for nobody.
    """

    def __init__(self, *, workers: int = 4, max_items: int = 500) -> None:
        self.workers = workers
        self.max_items = max_items
        self.running = False
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._write: Callable[[list[_Pending], datetime], Awaitable[dict[int, ItemResult]]] | None = None

    def bind(self, write: Callable[[list[_Pending], datetime], Awaitable[dict[int, ItemResult]]]) -> None:
        """The function that commits a list of reports in one transaction."""
        self._write = write

    async def write(self, pending: list[_Pending], now: datetime) -> dict[int, ItemResult]:
        """Queue reports for the next group transaction and wait until it committed."""
        future: asyncio.Future[dict[int, ItemResult]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((pending, now, future))
        return await future

    async def run(self) -> None:
        """Serve the queue until cancelled (a background loop of the service runtime)."""
        self.running = True
        try:
            await asyncio.gather(*(self._worker() for _ in range(self.workers)))
        finally:
            self.running = False
            while not self._queue.empty():
                *_job, future = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(RuntimeError("intake is shutting down"))

    async def _worker(self) -> None:
        while True:
            group = [await self._queue.get()]
            items = len(group[0][0])
            while not self._queue.empty() and items < self.max_items:
                job = self._queue.get_nowait()
                group.append(job)
                items += len(job[0])
            await self._commit_group(group)

    async def _commit_group(self, group: list[_Job]) -> None:
        assert self._write is not None
        live = [job for job in group if not job[2].done()]
        if not live:
            return
        try:
            merged = await self._write([p for job in live for p in job[0]], max(job[1] for job in live))
        except Exception as exc:
            if len(live) == 1:
                live[0][2].set_exception(exc)
                return
            log.warning("group commit of %d requests failed (%r); committing them one by one", len(live), exc)
            for job in live:
                await self._commit_group([job])
            return
        for pending, _now, future in live:
            if not future.done():
                future.set_result({p.key: merged[p.key] for p in pending})


# ---------------------------------------------------------------- lifecycle events (the consumer's use case)


class LifecycleRepository(Protocol):
    """What :func:`apply_lifecycle_events` needs of the repository."""

    async def apply_status_changes(self, changes: Sequence[repo.Change]) -> list[domain.Unlinked]: ...


async def apply_lifecycle_events(
    uow: UnitOfWork[LifecycleRepository], events: Sequence[LifecycleEvent], *, reference: ReferenceData
) -> list[domain.Unlinked]:
    """Keep the Open311 view current from a batch of new lifecycle events, in ``uow``'s transaction.

    A closure also undoes the duplicate link of reports observed after it: each goes on as a
    hazard of its own (``hazard.duplicate_unlinked``, counted once committed).
    """
    changes = []
    for event in events:
        change = domain.status_change(event, reference=reference)
        if change is not None:
            changes.append((event.hazard_id, change, event.occurred_at))
    unlinked = await uow.repo.apply_status_changes(changes)
    await uow.publish(*(domain.unlinked_event(u, now=uow.now) for u in unlinked))
    if unlinked:
        uow.after_commit(lambda: _count_unlinked(unlinked))
    return unlinked


def _count_unlinked(unlinked: Sequence[domain.Unlinked]) -> None:
    for u in unlinked:
        metrics.DUPLICATES_UNLINKED.labels(u.category).inc()
